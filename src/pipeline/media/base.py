"""What every modality's media writer does: decoder outputs -> examples -> files on disk and W&B media.

Examples are laid out in rows, each with a name: originals over reconstructions in stage one,
one row per class (or rows of eight when unconditional) for samples. The first file a writer
returns is the one to look at (a PNG grid, a spectrogram grid, a text file).
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from pipeline.fileio import atomic_write


class Media(ABC):
    """One modality's way of writing and logging examples; chosen by ``modality.media``."""

    sample_stem = "samples"  # stage=sample writes <run dir>/<sample_stem>.<ext> (and a folder of that name where needed)

    def to_data(self, output: torch.Tensor) -> torch.Tensor:
        """Decoder output -> examples as the data module serves them (here: clamped to [-1, 1])."""
        return output.detach().float().clamp(-1.0, 1.0)

    @abstractmethod
    def save_rows(self, rows: list[torch.Tensor], names: list[str], stem: Path) -> list[Path]:
        """Write the rows of examples under ``stem`` (``stem.png``, ``stem.txt``, ``stem/``); the files written."""

    @abstractmethod
    def log(self, logger: WandbLogger, key: str, rows: list[torch.Tensor], names: list[str], files: list[Path], step: int | None, caption: str) -> None:
        """Log what :meth:`save_rows` wrote to W&B under ``key``."""

    @abstractmethod
    def arrays(self, examples: torch.Tensor) -> dict[str, np.ndarray]:
        """The raw examples for ``samples.npz``."""


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
