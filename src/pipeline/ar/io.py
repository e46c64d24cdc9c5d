"""``ar.pt``: the AR prior's EMA weights, its config and metadata, as plain tensors (``weights_only=True``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.ar.model import ARPrior
from pipeline.ar.module import ARModule
from pipeline.errors import UserError, one_line
from pipeline.weights_file import read_weights_file, write_weights_file

FORMAT = "pipeline.ar/1"


@dataclass
class LoadedAR:
    model: ARPrior
    metadata: dict[str, Any] = field(default_factory=dict)


def save_ar(module: ARModule, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``ar.pt`` atomically with the EMA weights (the raw weights stay in the Lightning checkpoint)."""
    return write_weights_file(path, {
        "format": FORMAT, "config": dict(module.model.config), "metadata": metadata,
        "state_dict": {k: v.detach().cpu() for k, v in module.ema.module.state_dict().items()},
    })


def load_ar(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedAR:
    """Load ``ar.pt``; a missing, corrupt or foreign file raises :class:`UserError` with one line."""
    payload = read_weights_file(path, (FORMAT,), "AR prior", "train one with: python -m pipeline stage=ar data=<name>", map_location)
    try:
        model = ARPrior(**payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{path} is damaged or does not match its own config: {one_line(err, 200)}") from err
    model.eval().requires_grad_(False)
    return LoadedAR(model, payload.get("metadata", {}))
