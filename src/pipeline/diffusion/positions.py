"""Fixed sin-cos position embeddings for 1-D and 2-D token grids (the DiT's patches, a prompt's tokens)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def sincos_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """``(N,)`` positions -> ``(N, dim)`` sin-cos features (half sines, half cosines)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    angles = positions.double()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def position_embedding(grid: Sequence[int], dim: int) -> torch.Tensor:
    """Fixed sin-cos embedding of a 1-D or 2-D token grid: ``(prod(grid), dim)``."""
    if len(grid) == 1:
        return sincos_embedding(torch.arange(grid[0]), dim)
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    return torch.cat([sincos_embedding(rows.flatten(), dim // 2), sincos_embedding(cols.flatten(), dim // 2)], dim=1)
