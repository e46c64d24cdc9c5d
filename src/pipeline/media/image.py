"""Images: PNG grids on disk, W&B images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from pipeline.fileio import atomic_write
from pipeline.media.base import Media


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` floats in [-1, 1] -> uint8 ``(N, C, H, W)``."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def image_grid(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Tile rows of ``(N, C, H, W)`` images in [-1, 1] into one ``(H', W', C)`` uint8 array; shorter rows end in white."""
    tiles = [to_uint8(row) for row in rows]
    channels, height, width = next(t for t in tiles if len(t)).shape[1:]
    columns = max(len(t) for t in tiles)
    grid = np.full((len(tiles) * (height + pad) + pad, columns * (width + pad) + pad, channels), 255, dtype=np.uint8)
    for r, row in enumerate(tiles):
        for c, image in enumerate(row):
            top, left = pad + r * (height + pad), pad + c * (width + pad)
            grid[top : top + height, left : left + width] = image.transpose(1, 2, 0)
    return grid


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an ``(H, W, C)`` uint8 array as PNG (grey when C == 1), atomically."""
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return atomic_write(path, lambda handle: image.save(handle, format="PNG"))


class ImageMedia(Media):
    """Rows of images -> one PNG grid (``stem.png``); W&B image. ``samples.npz`` key: ``images`` (N x C x H x W uint8)."""

    sample_stem = "grid"

    def save_rows(self, rows: list[torch.Tensor], names: list[str], stem: Path) -> list[Path]:
        return [save_png(image_grid(rows), stem.with_suffix(".png"))]

    def log(self, logger: WandbLogger, key: str, rows: list[torch.Tensor], names: list[str], files: list[Path], step: int | None, caption: str) -> None:
        logger.log_image(key, [str(files[0])], step=step, caption=[caption])

    def arrays(self, examples: torch.Tensor) -> dict[str, np.ndarray]:
        return {"images": to_uint8(examples)}
