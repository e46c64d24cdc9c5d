"""The data module every modality shares: ``prepare_data`` builds ``data/<name>/`` once, ``setup`` reads it.

A modality's subclass says which sources to try (:meth:`DataModule.sources`), how a split's raw
items become fixed-size examples (:meth:`DataModule.to_examples`) and how stored examples are
served (:meth:`DataModule.dataset`); everything else (the seeded split, the Arrow folder and its
reuse, the loaders) is here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.data.prepare import prepare, prepared_record
from pipeline.data.sampling import train_loader
from pipeline.data.sources import RawData
from pipeline.errors import UserError, one_line


class DataModule(L.LightningDataModule, ABC):
    """Train/val/test loaders for data set ``name``.

    Args:
        name: folder under ``data_dir`` and the name runs are filed under.
        modality: ``image``, ``audio`` or ``text``: must match the subclass (checked against ``modality=``).
        hub_id: Hugging Face dataset id (or a local dataset folder) for ``datasets.load_dataset``.
        label_column: the hub dataset's label column.
        offline: the offline source tried after the hub (each modality names its own).
        path: local files to import instead of any other source.
        num_classes: label count (for class-conditional models; 0 for unlabelled data).
        batch_size, num_workers: the loaders' (``batch_size`` per device: the stages derive it from the global batch).
        val_size, test_size: examples held out (text: documents); test comes from the source's own test split when it has one.
        hub_timeout: seconds for the hub probe before falling back.
        seed: seeds the split (and the synthetic sources).
        data_dir: where prepared data sets live.
        how_to_fix: the hint appended when no source works.
        spec: the subclass's own settings; they join the common ones in :attr:`spec`, which keys the prepared folder.
        shuffle: a new training order every epoch (seeded by ``seed`` and the epoch); off: the stored order.
    """

    column: str = ""  # the stored examples' column: "image", "audio" or "text"

    def __init__(
        self, name: str, modality: str, hub_id: str | None, label_column: str, offline: str | None, path: str | None,
        num_classes: int, batch_size: int, num_workers: int, val_size: int, test_size: int, hub_timeout: float, seed: int,
        data_dir: str, how_to_fix: str, spec: dict[str, Any], shuffle: bool = True,
    ) -> None:
        super().__init__()
        if val_size < 1 or test_size < 1:
            raise UserError(f"data.val_size and data.test_size must be at least 1 (got {val_size} and {test_size})")
        if modality != self.column:
            raise UserError(f"data={name} sets modality={modality}, but {type(self).__name__} serves {self.column}")
        self.name, self.modality, self.num_classes = name, modality, num_classes
        self.batch_size, self.num_workers, self.shuffle, self.seed = batch_size, num_workers, shuffle, seed
        self.data_dir, self.how_to_fix = Path(data_dir), how_to_fix
        self.spec: dict[str, Any] = dict(
            hub_id=hub_id, label_column=label_column, offline=offline, path=str(Path(path).expanduser().resolve()) if path else None,
            val_size=val_size, test_size=test_size, hub_timeout=hub_timeout, seed=seed, **spec,
        )
        self.splits: dict[str, Dataset] = {}

    @abstractmethod
    def sources(self) -> list[tuple[str, Callable[[], RawData]]]:
        """The sources to try, in order, as ``(kind, loader)``: local files if ``path`` is set, else hub, then offline."""

    @abstractmethod
    def to_examples(self, items: Any, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One split's raw items -> fixed-size examples ``(N, ...)`` and their labels."""

    @abstractmethod
    def dataset(self, examples: torch.Tensor, labels: torch.Tensor, split: str) -> Dataset:
        """The stored examples of ``split`` as a dataset of ``(example, label)``."""

    @property
    def prepared_dir(self) -> Path:
        return self.data_dir / self.name

    def prepare_data(self) -> None:
        prepare(self.name, self.spec, self.data_dir, self.how_to_fix, self.sources(), self.to_examples, self.column)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        try:
            columns = self._read_prepared()
        except Exception as err:  # a truncated Arrow file, a missing split, a foreign folder: pyarrow, OSError, KeyError
            raise UserError(
                f"the prepared data at {self.prepared_dir} cannot be read ({one_line(err, 160)}); "
                "delete that folder and run again to prepare it anew"
            ) from None
        for split, (examples, labels) in columns.items():
            self.splits[split] = self.dataset(torch.from_numpy(np.ascontiguousarray(examples)), torch.from_numpy(labels), split)

    def _read_prepared(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Examples and labels of every split, whole columns at once in their stored dtype (row-by-row
        access widens them and is ~100x slower)."""
        import datasets  # with pandas and pyarrow, 1.2 s to import: only reading prepared data needs it, not every command

        loaded = datasets.load_from_disk(str(self.prepared_dir))
        dtype = loaded["train"].features[self.column]
        dtype = getattr(dtype, "dtype", None) or dtype.feature.dtype  # ArrayND, or a fixed-length Sequence
        return {
            split: (
                loaded[split].with_format("numpy", columns=[self.column], dtype=np.dtype(dtype))[:][self.column],
                loaded[split].with_format("numpy", columns=["label"])[:]["label"].astype(np.int64),
            )
            for split in ("train", "val", "test")
        }

    @property
    def source_record(self) -> dict[str, Any]:
        return prepared_record(self.prepared_dir) or {}

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.batch_size, num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        check_one_batch(len(self.splits["train"]), self.batch_size, f"data={self.name}")
        return train_loader(self.splits["train"], self.batch_size, self.trainer, self.shuffle, self.seed, self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def check_one_batch(examples: int, batch_size: int, what: str) -> None:
    """Training drops the ragged last batch: a train split smaller than one batch would train for zero steps."""
    if examples < batch_size:
        raise UserError(f"{what} has {examples} training examples, fewer than one batch (data.batch_size={batch_size}): lower data.batch_size or use more data")
