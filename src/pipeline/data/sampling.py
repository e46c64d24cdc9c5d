"""The training data order, fixed by the global batch alone, so a run on N devices sees what a run on one sees.

Lightning's default (``DistributedSampler``) deals examples to ranks in turn, so the order of
examples, and what each optimizer step averages over, changes with the number of devices.
:class:`GlobalBatchSampler` fixes the sequence of global batches from ``(seed, epoch)``, and each
rank takes its contiguous share of every global batch, in ``accumulation`` consecutive
micro-batches. The union of one optimizer step's micro-batches over all ranks is therefore the
same global batch whatever the device count, and a checkpoint can resume on another one.

Resuming mid-epoch continues the interrupted epoch where it stopped: Lightning restores how many
batches of the epoch were processed, and the sampler skips them once (Lightning alone would
restart the epoch's order from its first batch and train on those examples twice).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochOrder:
    """The order of the training examples in one epoch: a permutation seeded by ``seed + epoch``, or the stored order.

    It is the batch sampler's ``sampler``, where Lightning looks for ``set_epoch`` at every epoch start.
    """

    def __init__(self, num_examples: int, shuffle: bool, seed: int) -> None:
        self.num_examples, self.shuffle, self.seed, self.epoch = num_examples, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_examples)
        return torch.randperm(self.num_examples, generator=torch.Generator().manual_seed(self.seed + self.epoch))


class GlobalBatchSampler(Sampler[list[int]]):
    """Micro-batches of indices for one rank.

    Args:
        num_examples: size of the training split.
        micro_batch: examples per forward pass on one rank.
        world: ranks; rank: this one.
        accumulation: micro-batches per rank per optimizer step.
        shuffle: a fresh permutation each epoch (seeded by ``seed + epoch``); off: the stored order.
        seed: seeds the permutations.
        skip: micro-batches of the first epoch iterated to leave out (those a resumed run already trained on).

    A global batch is ``micro_batch x world x accumulation`` examples; the ragged last one of an
    epoch is dropped, as a single-device run drops it.
    """

    def __init__(
        self, num_examples: int, micro_batch: int, world: int = 1, rank: int = 0, accumulation: int = 1, shuffle: bool = True, seed: int = 0, skip: int = 0,
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.num_examples, self.micro_batch, self.rank, self.accumulation = num_examples, micro_batch, rank, accumulation
        self.share = micro_batch * accumulation  # this rank's part of each global batch
        self.global_batch = self.share * world
        self.sampler, self.skip = EpochOrder(num_examples, shuffle, seed), skip

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for index, batch in enumerate(self._batches()):
            if index >= skip:
                yield batch

    def _batches(self) -> Iterator[list[int]]:
        order = self.sampler.order()
        for start in range(0, self.num_examples // self.global_batch * self.global_batch, self.global_batch):
            mine = order[start + self.rank * self.share : start + (self.rank + 1) * self.share]
            yield from (mine[i : i + self.micro_batch].tolist() for i in range(0, self.share, self.micro_batch))

    def __len__(self) -> int:
        """Micro-batches this rank loads per epoch."""
        return self.num_examples // self.global_batch * self.accumulation


def train_loader(dataset: Dataset, micro_batch: int, trainer: Any, shuffle: bool, seed: int, num_workers: int = 0) -> DataLoader:
    """The training loader of one rank of ``trainer`` (``None`` outside a Trainer: one process, no accumulation);
    in a run resumed mid-epoch, it starts after the batches the epoch had processed."""
    world, rank, accumulation = (trainer.world_size, trainer.global_rank, trainer.accumulate_grad_batches) if trainer is not None else (1, 0, 1)
    progress = trainer.fit_loop.epoch_loop.batch_progress if trainer is not None else None
    mid_epoch = progress is not None and trainer.fit_loop.restarting and not progress.is_last_batch  # a checkpoint at an epoch's end resumes with the next one
    skip = progress.current.processed if mid_epoch else 0
    sampler = GlobalBatchSampler(len(dataset), micro_batch, world, rank, accumulation, shuffle, seed, skip)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, persistent_workers=num_workers > 0)
