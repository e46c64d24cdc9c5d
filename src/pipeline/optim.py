"""Optimizers and learning-rate schedules shared by the stages."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler


def warmup_cosine_schedule(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1) -> LambdaLR:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` x the base rate at ``total_steps``."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def optimizer_config(
    optimizer: Callable[..., Optimizer] | None, scheduler: Callable[..., LRScheduler] | None, parameters: Iterable[torch.nn.Parameter], total_steps: int, owner: str,
) -> dict[str, Any]:
    """What a LightningModule's ``configure_optimizers`` returns: the configured optimizer over ``parameters`` and,
    if configured, its schedule stepped every optimizer step over ``total_steps``."""
    if optimizer is None:
        raise ValueError(f"{owner} needs an optimizer factory to train")
    built = optimizer(params=parameters)
    if scheduler is None:
        return {"optimizer": built}
    return {"optimizer": built, "lr_scheduler": {"scheduler": scheduler(optimizer=built, total_steps=total_steps), "interval": "step"}}
