"""The project's own weight files (``tokenizer.pt``, ``dit.pt``, ``ar.pt``, ``classifier.pt``): a dict of plain
tensors and plain values with a ``format`` tag, written atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import UserError, one_line
from pipeline.fileio import atomic_write


def write_weights_file(path: str | Path, payload: dict[str, Any]) -> Path:
    """Serialise ``payload`` in memory first (a full disk then fails as one ``OSError``), then replace ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def read_weights_file(path: str | Path, formats: tuple[str, ...], what: str, how_to_make: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The payload of a ``what`` file in one of ``formats``; a missing, unreadable or foreign file raises :class:`UserError` with one line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path} ({how_to_make})")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, random bytes, pickled objects: all the same to the user
        raise UserError(f"cannot read {what} file {path}: {one_line(err, 200)}") from err
    if not isinstance(payload, dict) or payload.get("format") not in formats:
        raise UserError(f"{path} is not a pipeline {what} file (expected format {formats[-1]!r})")
    return payload
