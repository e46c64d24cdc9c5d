"""Images: the data module, its dataset and its sources (hub, offline, local files, synthetic shapes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pipeline.data.datamodule import DataModule
from pipeline.data.sources import OFFLINE_SOURCES, RawData, load_hub, load_local
from pipeline.data.synthetic import make_synthetic_images
from pipeline.errors import UserError


class ImageTensorDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` held in memory, served as float in [-1, 1] with int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, hflip: bool = False) -> None:
        self.images, self.labels, self.hflip = images, labels, hflip

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, index: int | slice) -> torch.Tensor:
        """Examples as the tokenizer takes them, never flipped: floats in [-1, 1]."""
        return self.images[index].float().div_(127.5).sub_(1.0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.inputs(index)
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, self.labels[index]


def to_chw(images: Any, size: int, channels: int) -> np.ndarray:
    """Images (array ``(N, H, W[, C])`` or list of PIL images) -> ``(N, channels, size, size)`` uint8."""

    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(images), channels, size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        if img.mode != mode:
            img = img.convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(img, dtype=np.uint8)
        out[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return out


class ImageDataModule(DataModule):
    """Images ``(B, C, H, W)`` in [-1, 1] with int64 labels.

    Args (besides :class:`DataModule`'s):
        image_column: the hub dataset's image column.
        csv_label: where the label sits in a pixel CSV (``first`` or ``last``).
        size, channels: training resolution and channel count; sources are resized and converted to it.
        hflip: random horizontal flips on the train split (off for digits).
        synthetic_per_class: images per class of the synthetic source.
    """

    column = "image"

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
        shuffle: bool = True,
    ) -> None:
        super().__init__(
            name, modality, hub_id, label_column, offline, path, num_classes, batch_size, num_workers, val_size, test_size,
            hub_timeout, seed, data_dir, how_to_fix,
            spec=dict(image_column=image_column, csv_label=csv_label, size=size, channels=channels, synthetic_per_class=synthetic_per_class),
            shuffle=shuffle,
        )
        self.hflip = hflip

    def sources(self) -> list[tuple[str, Callable[[], RawData]]]:
        spec, size = self.spec, self.spec["size"]
        if spec["path"]:
            return [("local", lambda: load_local(spec["path"], size, spec["csv_label"]))]
        candidates: list[tuple[str, Callable[[], RawData]]] = []
        if spec["hub_id"]:
            candidates.append(("hub", lambda: load_hub(spec["hub_id"], spec["image_column"], spec["label_column"], self.data_dir / ".hf_cache", spec["hub_timeout"])))
        offline = spec["offline"]
        if offline == "synthetic":
            candidates.append(("generated", lambda: make_synthetic_images(size, spec["channels"], spec["synthetic_per_class"], spec["seed"])))
        elif offline:
            if offline not in OFFLINE_SOURCES:
                raise UserError(f"unknown data.offline source {offline!r}; valid: synthetic, {', '.join(OFFLINE_SOURCES)}")
            candidates.append(("offline", lambda: OFFLINE_SOURCES[offline](size)))
        return candidates

    def to_examples(self, items: Any, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return to_chw(items, self.spec["size"], self.spec["channels"]), labels

    def dataset(self, examples: torch.Tensor, labels: torch.Tensor, split: str) -> ImageTensorDataset:
        return ImageTensorDataset(examples, labels, hflip=self.hflip and split == "train")
