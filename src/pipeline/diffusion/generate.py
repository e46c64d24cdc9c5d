"""From noise to data: sample normalized latents with a DiT, de-normalize, quantize, decode."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.diffusion.dit import DiT
from pipeline.diffusion.objectives import Objective, Projection, Restart, guided
from pipeline.tokenizer import VQVAE


def class_labels(num: int, num_classes: int) -> torch.Tensor | None:
    """``num`` labels cycling through the classes, sorted: a grid then has one row per class."""
    if num_classes <= 0:
        return None
    return (torch.arange(num) % num_classes).sort().values


def _channel_view(stats: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return stats.to(like).view((1, -1) + (1,) * (like.ndim - 2))


def decode_latents(tokenizer: VQVAE, latents: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalized latents -> de-normalized -> nearest codes -> the tokenizer's decoder output."""
    z = latents * _channel_view(std, latents) + _channel_view(mean, latents)
    return tokenizer.decode(tokenizer.quantize(z).quantized)


def code_projection(tokenizer: VQVAE, mean: torch.Tensor, std: torch.Tensor) -> Projection:
    """Normalized latents -> the normalized vectors of their nearest codes (the sampler's ``project``)."""
    def project(latents: torch.Tensor) -> torch.Tensor:
        x = latents.to(next(tokenizer.parameters()).device)
        mu, sigma = _channel_view(mean, x), _channel_view(std, x)
        return ((tokenizer.quantize(x * sigma + mu).quantized - mu) / sigma).to(latents)

    return project


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
    project: Projection | None = None,
    temperature: float = 1.0,
    restart: Restart | None = None,
) -> torch.Tensor:
    """``num`` normalized latents, in batches; the same generator gives the same samples.

    ``labels``: the condition of each sample (class indices or prompts, see :class:`DiT`), or None.
    ``temperature``: a code-predicting DiT's softmax temperature; ``restart``: restart sampling (flow).
    """
    dit = getattr(model, "module", model)
    device = next(dit.parameters()).device
    out = []
    for start in range(0, num, batch_size):
        count = min(batch_size, num - start)
        noise = torch.randn((count, dit.in_channels, *dit.spatial), generator=generator).to(device)
        y = labels[start:start + count].to(device) if labels is not None else None
        null = dit.null_condition(y) if y is not None else None
        denoiser = guided(dit, y, cfg_scale, null, temperature)
        rounds = guided(dit, y, cfg_scale, null, restart.temperature) if restart is not None and restart.temperature != temperature else None
        out.append(objective.sample(denoiser, noise, steps, sampler, generator, project, restart, rounds))
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
    snap_to_codes: bool = False,
    temperature: float = 1.0,
    restart: Restart | None = None,
) -> torch.Tensor:
    """``num`` decoder outputs: images ``(N, C, H, W)`` or audio ``(N, 1, T)`` in [-1, 1], byte logits ``(N, 256, L)`` for text.

    ``snap_to_codes`` projects the sampler's clean estimate onto the nearest codes at every step;
    ``temperature`` is a code-predicting DiT's softmax temperature; ``restart``: rounds of restart sampling (flow).
    """
    project = code_projection(tokenizer, mean, std) if snap_to_codes else None
    latents = sample_latents(model, objective, labels, num, steps, sampler, cfg_scale, generator, batch_size, project, temperature, restart)
    device = next(tokenizer.parameters()).device
    return torch.cat([decode_latents(tokenizer, chunk.to(device), mean, std) for chunk in latents.split(batch_size)])
