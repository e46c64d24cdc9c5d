"""A small labelled image set drawn procedurally: ten shape classes, for tests and smoke runs."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from pipeline.data.sources import RawData

SHAPES = ["disc", "square", "triangle", "cross", "hbar", "vbar", "ring", "diagonal", "two_dots", "x"]


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], width: int, fill: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "disc":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "cross":
        draw.line([(cx, y0), (cx, y1)], fill=fill, width=width)
        draw.line([(x0, cy), (x1, cy)], fill=fill, width=width)
    elif shape == "hbar":
        draw.rectangle((x0, cy - width, x1, cy + width), fill=fill)
    elif shape == "vbar":
        draw.rectangle((cx - width, y0, cx + width, y1), fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=width)
    elif shape == "diagonal":
        draw.line([(x0, y1), (x1, y0)], fill=fill, width=width)
    elif shape == "two_dots":
        r = (x1 - x0) / 5
        draw.ellipse((x0, cy - r, x0 + 2 * r, cy + r), fill=fill)
        draw.ellipse((x1 - 2 * r, cy - r, x1, cy + r), fill=fill)
    elif shape == "x":
        draw.line([(x0, y0), (x1, y1)], fill=fill, width=width)
        draw.line([(x0, y1), (x1, y0)], fill=fill, width=width)


def make_synthetic_images(size: int = 28, channels: int = 1, per_class: int = 100, seed: int = 0) -> RawData:
    """``per_class`` images of each of ten shapes at random position, scale, stroke and (RGB) colour."""
    rng = np.random.default_rng(seed)
    mode = "L" if channels == 1 else "RGB"
    images, labels = [], []
    for label, shape in enumerate(SHAPES):
        for _ in range(per_class):
            background = tuple(int(v) for v in rng.integers(0, 60, channels))
            colour = tuple(int(v) for v in rng.integers(150, 256, channels))
            img = Image.new(mode, (size, size), background if channels > 1 else background[0])
            extent = rng.uniform(0.45, 0.8) * size
            x0, y0 = rng.uniform(0, size - extent, 2)
            width = max(1, int(round(rng.uniform(0.06, 0.14) * size)))
            _draw(ImageDraw.Draw(img), shape, (x0, y0, x0 + extent, y0 + extent), width, colour if channels > 1 else colour[0])
            images.append(np.asarray(img, dtype=np.uint8))
            labels.append(label)
    order = rng.permutation(len(images))
    stacked = np.stack(images)[order]
    return RawData({"train": (stacked, np.asarray(labels, dtype=np.int64)[order])}, f"synthetic shapes ({size}x{size}x{channels}, generated)", SHAPES)
