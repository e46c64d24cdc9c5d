"""Turning samples into files on disk and into W&B media."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.fileio import atomic_write


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` floats in [-1, 1] -> uint8 ``(N, C, H, W)``."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def image_grid(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Tile equally long rows of ``(N, C, H, W)`` images in [-1, 1] into one ``(H', W', C)`` uint8 array."""
    tiles = [to_uint8(row) for row in rows]
    num, channels, height, width = tiles[0].shape
    grid = np.full((len(tiles) * (height + pad) + pad, num * (width + pad) + pad, channels), 255, dtype=np.uint8)
    for r, row in enumerate(tiles):
        for c, image in enumerate(row):
            top, left = pad + r * (height + pad), pad + c * (width + pad)
            grid[top : top + height, left : left + width] = image.transpose(1, 2, 0)
    return grid


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an ``(H, W, C)`` uint8 array as PNG (grey when C == 1), atomically."""
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return atomic_write(path, lambda handle: image.save(handle, format="PNG"))
