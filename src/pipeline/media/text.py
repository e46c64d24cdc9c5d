"""Text: byte sequences -> UTF-8 text file on disk (invalid bytes replaced); a W&B table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from pipeline.data.text import decode_bytes
from pipeline.fileio import atomic_write
from pipeline.media.base import Media

DIVIDER = "-" * 72


class TextMedia(Media):
    """Rows of byte sequences -> ``stem.txt`` (a heading per row, the sequences between dividers); a W&B table.

    ``samples.npz`` key: ``bytes`` (N x L uint8, 0 is padding).
    """

    def to_data(self, output: torch.Tensor) -> torch.Tensor:
        """Byte logits ``(B, 256, L)`` -> byte ids ``(B, L)`` (the argmax); byte ids pass through."""
        return output.detach().argmax(dim=1) if output.is_floating_point() else output.detach()

    def texts(self, row: torch.Tensor) -> list[str]:
        return [decode_bytes(sequence) for sequence in row.cpu().numpy()]

    def save_rows(self, rows: list[torch.Tensor], names: list[str], stem: Path) -> list[Path]:
        sections = [f"## {name}\n\n" + f"\n{DIVIDER}\n".join(self.texts(row)) for row, name in zip(rows, names)]
        text = "\n\n".join(sections) + "\n"
        return [atomic_write(stem.with_suffix(".txt"), lambda handle: handle.write(text.encode("utf-8")))]

    def log(self, logger: WandbLogger, key: str, rows: list[torch.Tensor], names: list[str], files: list[Path], step: int | None, caption: str) -> None:
        data = [[name, i, text] for row, name in zip(rows, names) for i, text in enumerate(self.texts(row))]
        logger.log_table(key, columns=["row", "index", "text"], data=data, step=step)

    def arrays(self, examples: torch.Tensor) -> dict[str, np.ndarray]:
        return {"bytes": examples.cpu().numpy().astype(np.uint8)}
