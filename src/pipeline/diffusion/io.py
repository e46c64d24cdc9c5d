"""``dit.pt``: the EMA weights, the DiT and objective configs and the latent statistics, as plain tensors.

Loadable with ``weights_only=True``; classes are looked up by name, never imported from the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.diffusion.dit import DiT
from pipeline.diffusion.module import DiffusionModule
from pipeline.diffusion.objectives import OBJECTIVES, Objective
from pipeline.errors import UserError, one_line
from pipeline.weights_file import read_weights_file, write_weights_file

FORMAT = "pipeline.dit/1"


@dataclass
class LoadedDiT:
    """What sampling needs: the EMA model (eval mode, frozen), its objective and the latent statistics."""

    model: DiT
    objective: Objective
    mean: torch.Tensor
    std: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)


def save_dit(module: DiffusionModule, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``dit.pt`` atomically with the EMA weights (the raw weights stay in the Lightning checkpoint)."""
    return write_weights_file(path, {
        "format": FORMAT,
        "config": dict(module.model.config),
        "objective": {"name": module.objective.name, **module.objective.config},
        "latent_mean": module.latent_mean.detach().cpu(),
        "latent_std": module.latent_std.detach().cpu(),
        "metadata": metadata,
        "state_dict": {k: v.detach().cpu() for k, v in module.ema.module.state_dict().items()},
    })


def load_dit(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedDiT:
    """Load ``dit.pt``; a missing, corrupt or foreign file raises :class:`UserError` with one line."""
    payload = read_weights_file(path, (FORMAT,), "DiT", "train one with: python -m pipeline stage=dit data=<name>", map_location)
    try:
        objective_config = dict(payload["objective"])
        name = objective_config.pop("name")
        if name not in OBJECTIVES:
            raise UserError(f"{path} names an unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
        objective = OBJECTIVES[name](**objective_config)
        model = DiT(**payload["config"])
        model.load_state_dict(payload["state_dict"])
        loaded = LoadedDiT(model, objective, payload["latent_mean"], payload["latent_std"], payload.get("metadata", {}))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{path} is damaged or does not match its own config: {one_line(err, 200)}") from err
    model.eval().requires_grad_(False)
    return loaded
