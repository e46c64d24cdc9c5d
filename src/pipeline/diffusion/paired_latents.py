"""Stage two's data for prompt conditioning: cached image latents, each served with a prompt for its digit.

The prompts go through the source modality's frozen tokenizer once per run (a few thousand short
examples: seconds), are normalized per channel with the statistics of the training prompts and
carry the presence channel of :mod:`pipeline.diffusion.prompt`. Paired by label, a training image
gets a new random prompt of its digit every time it is served and a validation image always the same
one, so the validation loss compares across steps; paired by row (a table), image ``i`` gets prompt ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.data.paired import PromptSource
from pipeline.diffusion.latents import LatentDataModule, LatentDataset
from pipeline.diffusion.prompt import with_presence
from pipeline.errors import UserError
from pipeline.tokenizer import VQVAE


@torch.no_grad()
def encode_prompts(tokenizer: VQVAE, examples: torch.Tensor, length: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """Tokenizer inputs ``(P, ...)`` -> its continuous latents ``(P, D, L)`` (float32, on the CPU), the first ``length`` of them."""
    device = next(tokenizer.parameters()).device
    latents = torch.cat([tokenizer.encode(chunk.to(device)).float().cpu() for chunk in examples.split(batch_size)])
    return latents[..., :length].contiguous()


def channel_stats(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of ``(P, D, L)`` latents over prompts and positions."""
    flat = latents.transpose(0, 1).reshape(latents.shape[1], -1).double()
    return flat.mean(1).float(), flat.std(1).clamp_min(1e-6).float()


def as_prompts(latents: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Raw prompt latents -> normalized prompts with the presence channel: what the DiT reads."""
    return with_presence((latents - mean.view(1, -1, 1)) / std.view(1, -1, 1))


@dataclass
class PromptBank:
    """The prompts of one split ``(P, D + 1, L)`` and their digits, with the prompts of each digit indexed."""

    prompts: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        self.by_label = {int(label): torch.nonzero(self.labels == label).flatten() for label in self.labels.unique()}

    def for_labels(self, labels: torch.Tensor, fixed_keys: torch.Tensor | None = None) -> torch.Tensor:
        """A prompt of each label: a random one, or the one ``fixed_keys`` (ints) pick."""
        missing = sorted({int(label) for label in labels} - set(self.by_label))
        if missing:
            raise ValueError(f"no prompt for labels {missing}")
        chosen = []
        for i, label in enumerate(labels.tolist()):
            pool = self.by_label[label]
            key = int(fixed_keys[i]) if fixed_keys is not None else int(torch.randint(len(pool), ()))
            chosen.append(pool[key % len(pool)])
        return self.prompts[torch.stack(chosen)]


class PairedLatentDataset(Dataset):
    """Image latents (a :class:`LatentDataset`) with a prompt in place of the label: one for the image's label
    (random, or ``fixed`` per image), or with ``by_row`` the bank's prompt of the same index."""

    def __init__(self, images: LatentDataset, bank: PromptBank, fixed: bool = False, by_row: bool = False) -> None:
        self.images, self.bank, self.fixed, self.by_row = images, bank, fixed, by_row

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        items = self.images.__getitems__(indices)
        if self.by_row:
            prompts = self.bank.prompts[torch.tensor(indices)]
        else:
            labels = torch.stack([label for _, label in items])
            prompts = self.bank.for_labels(labels, torch.tensor(indices) if self.fixed else None)
        return [(latent, prompt) for (latent, _), prompt in zip(items, prompts.unbind(0))]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]


class PairedLatentDataModule(L.LightningDataModule):
    """The image latent cache (``images``) served with prompts from ``source`` encoded by the source modality's ``tokenizer``.

    Args:
        images: the image :class:`LatentDataModule` (its cache, statistics and loader settings).
        source: where the prompts come from (:class:`~pipeline.data.paired.TextPrompts`, :class:`~pipeline.data.paired.AudioPrompts`, a table's column).
        tokenizer: the source modality's frozen stage-one tokenizer, loaded from ``tokenizer_path``.
    """

    def __init__(self, images: LatentDataModule, source: PromptSource, tokenizer: VQVAE, tokenizer_path: str | Path) -> None:
        super().__init__()
        self.images, self.source, self.tokenizer, self.tokenizer_path = images, source, tokenizer, Path(tokenizer_path)
        self.banks: dict[str, PromptBank] = {}
        self.prompt_mean = self.prompt_std = torch.empty(0)
        self.prompt_length = source.prompt_latents(int(tokenizer.tokenizer_metadata["latent_shape"][-1]))  # the latents the DiT reads

    @property
    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The image latents' per-channel ``(mean, std)``: what the DiT's outputs are de-normalized with."""
        return self.images.stats

    @property
    def tokenizer_id(self) -> str:
        return self.images.tokenizer_id

    @property
    def cache_dir(self) -> Path:
        return self.images.cache_dir

    def prepare_data(self) -> None:
        self.images.prepare_data()
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        self.images.setup(stage)
        if self.banks:
            return
        latents = {split: (encode_prompts(self.tokenizer, examples, self.prompt_length), labels) for split in ("train", "val") for examples, labels in [self.source.examples(split)]}
        self.prompt_mean, self.prompt_std = channel_stats(latents["train"][0])
        self.banks = {split: PromptBank(as_prompts(z, self.prompt_mean, self.prompt_std), labels) for split, (z, labels) in latents.items()}
        if self.by_row:
            self._check_rows()

    @property
    def by_row(self) -> bool:
        return self.source.table_data is not None

    def _check_rows(self) -> None:
        """Prompt ``i`` must be the prompt of image latent ``i``: the labels of both agree row for row."""
        for split, bank in self.banks.items():
            if not torch.equal(bank.labels, self.images.splits[split].labels):
                raise UserError(
                    f"the {split} prompts of {self.source.table_data.name} do not line up row by row with the image latents in {self.cache_dir} "
                    "(their labels differ): prepare both from the same table with the same data.val_size, data.test_size and seed"
                )

    def train_dataloader(self) -> DataLoader:
        return self.images.training_loader(PairedLatentDataset(self.images.splits["train"], self.banks["train"], by_row=self.by_row), self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self.images.validation_loader(PairedLatentDataset(self.images.splits["val"], self.banks["val"], fixed=True, by_row=self.by_row))
