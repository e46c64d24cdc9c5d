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


NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)  # Muon's quintic: fast rather than exact (singular values land in ~0.7-1.2)


def orthogonalize(update: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """About the nearest semi-orthogonal matrix to ``update``, viewed as ``rows x (everything else)``
    (a conv filter as ``out x (in * kernel)``), by ``steps`` Newton-Schulz iterations."""
    a, b, c = NEWTON_SCHULZ
    x = update.reshape(update.shape[0], -1).float()
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    if transposed:
        x = x.T
    return x.reshape(update.shape).to(update.dtype)


class Muon(Optimizer):
    """Muon (Jordan et al., 2024) for every parameter of two or more dimensions (linear weights, conv
    filters), AdamW for the rest (biases, norm gains): one optimizer, so clipping, schedules and
    checkpoints treat it like any other.

    Muon takes the Nesterov momentum of the gradient and replaces it by the nearest semi-orthogonal
    matrix, an update of the same size in every direction, scaled by ``0.2 * sqrt(max(rows, cols))``
    so that its RMS matches AdamW's (Liu et al., 2025): learning rates and weight decay read as
    AdamW's. Each rank computes it from the same all-reduced gradients (DDP). FSDP hands an optimizer
    flat one-dimensional shards, which would all take the AdamW path (not checked here: FSDP needs GPUs).

    Args:
        params: the parameters (split by their number of dimensions).
        lr, betas, eps: AdamW's, for the parameters of fewer than two dimensions.
        muon_lr: the learning rate of the Muon parameters (``lr`` if None).
        momentum, nesterov: Muon's momentum.
        weight_decay: decoupled, for both groups.
        ns_steps: Newton-Schulz iterations per update.
    """

    def __init__(
        self, params: Iterable[torch.Tensor], lr: float = 1e-3, muon_lr: float | None = None, momentum: float = 0.95, nesterov: bool = True,
        betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8, weight_decay: float = 0.0, ns_steps: int = 5,
    ) -> None:
        params = list(params)
        matrices = [p for p in params if p.ndim >= 2]
        others = [p for p in params if p.ndim < 2]
        groups = [
            dict(params=matrices, muon=True, lr=lr if muon_lr is None else muon_lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, weight_decay=weight_decay),
            dict(params=others, muon=False, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay),
        ]
        super().__init__([g for g in groups if g["params"]], dict(lr=lr))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.mul_(1 - group["lr"] * group["weight_decay"])
                (self._muon_step if group["muon"] else self._adamw_step)(p, group)
        return loss

    def _muon_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        buffer = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
        buffer.mul_(group["momentum"]).add_(p.grad)
        update = p.grad.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer
        rows, cols = p.shape[0], p[0].numel()
        p.add_(orthogonalize(update, group["ns_steps"]), alpha=-group["lr"] * 0.2 * math.sqrt(max(rows, cols)))

    def _adamw_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if not state:
            state.update(step=torch.zeros(()), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        beta1, beta2 = group["betas"]
        state["step"] += 1
        step = float(state["step"])
        state["exp_avg"].lerp_(p.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        denominator = (state["exp_avg_sq"] / (1 - beta2**step)).sqrt_().add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denominator, value=-group["lr"] / (1 - beta1**step))


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
