"""The latent cache: the frozen tokenizer encodes the data once, stage two reads memory-mapped latents.

``outputs/<data>/latents/<tokenizer-id>/`` holds ``{train,val}_latents.npy`` (float32,
``(N, views, D, *grid)``: view 1 is the horizontal flip where the data allow flips),
``{train,val}_labels.npy`` and ``meta.json`` (per-channel mean and std, shapes, where it came
from), written last, so a folder without it is an unfinished build and is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.data.datamodule import check_one_batch
from pipeline.data.sampling import train_loader
from pipeline.errors import UserError, one_line
from pipeline.fileio import file_digest, write_json
from pipeline.tokenizer import VQVAE, load_tokenizer

log = logging.getLogger("pipeline")
META_FILE = "meta.json"
CACHE_VERSION = 1


def data_fingerprint(record: dict[str, Any], hflip: bool) -> str:
    """What else the cache depends on: the prepared data's source record and the flip switch."""
    text = json.dumps({"source": record, "hflip": hflip, "version": CACHE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@torch.no_grad()
def encode_split(tokenizer: VQVAE, dataset: Any, out: np.ndarray, batch_size: int = 256) -> None:
    """Encode a split's examples (``dataset.inputs(slice)``) into ``out`` ``(N, views, ...)``: view 0 as
    is, view 1 (if any) flipped along the last axis (horizontal flips of images)."""
    for start in range(0, len(dataset), batch_size):
        batch = dataset.inputs(slice(start, start + batch_size))
        for view in range(out.shape[1]):
            out[start:start + len(batch), view] = tokenizer.encode(batch.flip(-1) if view else batch).numpy()


def channel_stats(latents: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over every example, view and position (float64 sums, chunked)."""
    channels = latents.shape[2]
    total, total_sq, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(latents), chunk):
        block = np.moveaxis(np.asarray(latents[start:start + chunk], dtype=np.float64), 2, 0).reshape(channels, -1)
        total += block.sum(1)
        total_sq += (block ** 2).sum(1)
        count += block.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
    return mean.tolist(), std.tolist()


def build_latent_cache(tokenizer: VQVAE, splits: dict[str, Any], target: Path, hflip: bool, meta: dict[str, Any]) -> Path:
    """Encode the ``train`` and ``val`` splits into ``target``, built beside it and renamed into place."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shapes = {}
    for split in ("train", "val"):
        dataset = splits[split]
        views = 2 if hflip and split == "train" else 1
        with torch.no_grad():
            latent_shape = tuple(tokenizer.encode(dataset.inputs(slice(0, 1))).shape[1:])
        out = np.lib.format.open_memmap(tmp / f"{split}_latents.npy", mode="w+", dtype=np.float32, shape=(len(dataset), views, *latent_shape))
        encode_split(tokenizer, dataset, out)
        out.flush()
        np.save(tmp / f"{split}_labels.npy", dataset.labels.numpy().astype(np.int64))
        shapes[split] = list(out.shape)
        if split == "train":
            mean, std = channel_stats(out)
        del out
    write_json(tmp / META_FILE, {**meta, "shapes": shapes, "latent_shape": shapes["train"][2:], "mean": mean, "std": std, "version": CACHE_VERSION})
    if target.exists():
        stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
        os.replace(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, target)
    return target


def read_meta(cache_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((cache_dir / META_FILE).read_text())
    except (OSError, ValueError):
        return None


class LatentDataset(Dataset):
    """Normalized latents from a memory-mapped cache, with a random view (original or flip) per item.

    ``__getitems__`` reads a whole batch with one fancy index into the memory map.
    """

    def __init__(self, latents: np.ndarray, labels: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.latents, self.labels = latents, torch.from_numpy(np.asarray(labels))
        shape = (1, -1) + (1,) * (latents.ndim - 3)
        self.mean, self.std = mean.view(shape), std.view(shape)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        order = np.asarray(indices)
        block = torch.from_numpy(np.asarray(self.latents[order]))
        views = block.shape[1]
        chosen = torch.randint(views, (len(order),)) if views > 1 else torch.zeros(len(order), dtype=torch.long)
        latents = (block[torch.arange(len(order)), chosen] - self.mean) / self.std
        return list(zip(latents.unbind(0), self.labels[order].unbind(0)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]


class LatentDataModule(L.LightningDataModule):
    """Stage two's data: builds the cache on local rank 0 (``prepare_data``), then serves it.

    Args:
        data: the :class:`~pipeline.data.DataModule` (any modality) whose examples the tokenizer encodes.
        tokenizer_path: the frozen tokenizer; its file digest names the cache folder.
        cache_root: ``outputs/<data>/latents``.
        batch_size: per device (the stage derives it from the global batch).
        hflip: also encode horizontal flips (from ``data.hflip``).
        shuffle, seed: the training order (:func:`~pipeline.data.sampling.train_loader`).
        latent_shape: ``[D, *grid]`` the tokenizer makes; a cache holding another shape is refused.
    """

    def __init__(
        self, data: L.LightningDataModule, tokenizer_path: str | Path, cache_root: str | Path, batch_size: int, hflip: bool = False, num_workers: int = 0,
        shuffle: bool = True, seed: int = 0, latent_shape: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.latent_shape = latent_shape
        self.data, self.tokenizer_path = data, Path(tokenizer_path)
        self.batch_size, self.hflip, self.num_workers, self.shuffle, self.seed = batch_size, hflip, num_workers, shuffle, seed
        self.tokenizer_id = file_digest(self.tokenizer_path)
        self.cache_dir = Path(cache_root) / self.tokenizer_id
        self.meta: dict[str, Any] = {}
        self.splits: dict[str, LatentDataset] = {}

    def prepare_data(self) -> None:
        self.data.prepare_data()
        fingerprint = data_fingerprint(self.data.source_record, self.hflip)
        meta = read_meta(self.cache_dir)
        if meta and meta.get("data_fingerprint") == fingerprint and meta.get("version") == CACHE_VERSION:
            log.info("latent cache: %s (reused)", self.cache_dir)
            return
        self.data.setup()
        tokenizer = load_tokenizer(self.tokenizer_path)
        build_latent_cache(tokenizer, self.data.splits, self.cache_dir, self.hflip, {
            "tokenizer": str(self.tokenizer_path.resolve()), "tokenizer_id": self.tokenizer_id,
            "data": self.data.name, "data_fingerprint": fingerprint, "hflip": self.hflip,
        })
        log.info("latent cache: %s (built: %d train latents%s)", self.cache_dir, len(self.data.splits["train"]), ", with flips" if self.hflip else "")

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.meta = read_meta(self.cache_dir) or {}
        arrays = self._read_checked()
        mean, std = self.stats
        for split, (latents, labels) in arrays.items():
            self.splits[split] = LatentDataset(latents, labels, mean, std)

    def _read_checked(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The memory-mapped latents and labels, refused with one line when they are unreadable or do not
        belong to this tokenizer (a copied or edited folder): training on them would fail later or, worse, not."""
        fix = "delete that folder and run again to rebuild it"
        if self.meta.get("tokenizer_id") != self.tokenizer_id:
            raise UserError(f"the latent cache {self.cache_dir} was made by tokenizer {self.meta.get('tokenizer_id')}, not {self.tokenizer_path} ({self.tokenizer_id}); {fix}")
        arrays = {}
        for split in ("train", "val"):
            try:
                latents = np.load(self.cache_dir / f"{split}_latents.npy", mmap_mode="r")
                labels = np.load(self.cache_dir / f"{split}_labels.npy")
            except (OSError, ValueError, EOFError) as err:
                raise UserError(f"the latent cache {self.cache_dir} cannot be read ({one_line(err, 160)}); {fix}") from None
            shape = list(latents.shape[2:])
            if shape != list(self.meta.get("latent_shape", [])) or (self.latent_shape is not None and shape != list(self.latent_shape)) or len(labels) != len(latents):
                raise UserError(
                    f"the latent cache {self.cache_dir} holds {split} latents of shape {shape} ({len(latents)} latents, {len(labels)} labels), "
                    f"but the tokenizer makes {list(self.latent_shape or self.meta.get('latent_shape', []))}; {fix}"
                )
            arrays[split] = (latents, labels)
        return arrays

    @property
    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(mean, std)`` of the train latents."""
        return torch.tensor(self.meta["mean"]), torch.tensor(self.meta["std"])

    def training_loader(self, dataset: Dataset, trainer: L.Trainer | None) -> DataLoader:
        """This cache's training loader over ``dataset``: its train split, or a view of it (prompts paired in, codes)
        served by a data module that wraps this one, with that module's ``trainer``."""
        check_one_batch(len(dataset), self.batch_size, f"the latent cache {self.cache_dir}")
        return train_loader(dataset, self.batch_size, trainer, self.shuffle, self.seed, self.num_workers)

    def validation_loader(self, dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self.training_loader(self.splits["train"], self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self.validation_loader(self.splits["val"])
