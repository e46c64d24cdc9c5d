"""From noise to data: sample normalized latents with a DiT, de-normalize, quantize, decode."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.diffusion.dit import DiT
from pipeline.diffusion.objectives import Objective, guided
from pipeline.tokenizer import VQVAE


def class_labels(num: int, num_classes: int) -> torch.Tensor | None:
    """``num`` labels cycling through the classes, sorted: a grid then has one row per class."""
    if num_classes <= 0:
        return None
    return (torch.arange(num) % num_classes).sort().values


def decode_latents(tokenizer: VQVAE, latents: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalized latents -> de-normalized -> nearest codes -> the tokenizer's decoder output."""
    shape = (1, -1) + (1,) * (latents.ndim - 2)
    z = latents * std.to(latents).view(shape) + mean.to(latents).view(shape)
    return tokenizer.decode(tokenizer.quantize(z).quantized)


@torch.no_grad()
def sample_latents(
    model: DiT | nn.Module,
    objective: Objective,
    labels: torch.Tensor | None,
    num: int,
    steps: int,
    sampler: str | None = None,
    cfg_scale: float = 1.0,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """``num`` normalized latents, in batches; the same generator gives the same samples."""
    dit = getattr(model, "module", model)
    device = next(dit.parameters()).device
    out = []
    for start in range(0, num, batch_size):
        count = min(batch_size, num - start)
        noise = torch.randn((count, dit.in_channels, *dit.spatial), generator=generator).to(device)
        y = labels[start:start + count].to(device) if labels is not None else None
        denoiser = guided(dit, y, cfg_scale, dit.null_class)
        out.append(objective.sample(denoiser, noise, steps, sampler, generator))
    return torch.cat(out)


@torch.no_grad()
def generate(
    model: DiT | nn.Module,
    objective: Objective,
    tokenizer: VQVAE,
    mean: torch.Tensor,
    std: torch.Tensor,
    labels: torch.Tensor | None,
    num: int,
    steps: int,
    sampler: str | None = None,
    cfg_scale: float = 1.0,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """``num`` decoder outputs: images ``(N, C, H, W)`` or audio ``(N, 1, T)`` in [-1, 1], byte logits ``(N, 256, L)`` for text."""
    latents = sample_latents(model, objective, labels, num, steps, sampler, cfg_scale, generator, batch_size)
    device = next(tokenizer.parameters()).device
    return torch.cat([decode_latents(tokenizer, chunk.to(device), mean, std) for chunk in latents.split(batch_size)])
