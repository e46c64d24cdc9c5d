"""Exponential moving average of the weights, on :class:`torch.optim.swa_utils.AveragedModel`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_update(decay: float, warmup: float = 10.0) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """A fused (``_foreach``) EMA step whose decay ramps up as ``(1 + n) / (warmup + n)``, capped at ``decay``.

    Without the ramp a 0.999 average would still remember the random initialisation after
    the few thousand steps a CPU run takes. Below the cap the average weighs the weights of step n
    about as ``n ** (warmup - 2)``, EDM2's power-function EMA with ``gamma = warmup - 2``: a smaller
    ``warmup`` averages over more of the run (10: mostly its last tenth; 3: weights growing linearly).
    """
    if warmup <= 1:
        raise ValueError(f"the EMA warmup must be > 1, got {warmup}")

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (warmup + n))
        torch._foreach_lerp_(averaged, current, weight)

    return update


def ema_model(model: nn.Module, decay: float, warmup: float = 10.0) -> AveragedModel:
    """A frozen EMA copy of ``model`` (parameters and buffers), ramped as :func:`ema_update` says; call ``update_parameters(model)`` per step."""
    return AveragedModel(model, multi_avg_fn=ema_update(decay, warmup), use_buffers=True).requires_grad_(False)
