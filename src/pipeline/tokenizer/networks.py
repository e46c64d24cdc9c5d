"""Encoder and decoder networks for images: residual conv stacks with configurable downsampling.

Each network keeps the plain keyword arguments it was built with in ``self.config``, so a
tokenizer file can rebuild it without pickled objects (see :mod:`pipeline.tokenizer.io`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _group_norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= 4 or g == 1)
    return nn.GroupNorm(groups, channels)


class ResBlock2d(nn.Module):
    """Pre-activation residual block: (norm, SiLU, conv3x3) x 2 plus a skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _group_norm(in_channels),
            nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            _group_norm(out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class ImageEncoder(nn.Module):
    """``(B, C, H, W)`` images -> ``(B, latent_dim, H/f, W/f)`` with ``f = 2 ** (len(channels) - 1)``.

    Args:
        in_channels: image channels (1 for digits, 3 for RGB).
        channels: width per resolution level; every level after the first halves H and W.
        num_res_blocks: residual blocks per level.
        latent_dim: channels of the continuous latent z_e.
    """

    spatial_ndim = 2

    def __init__(self, in_channels: int, channels: Sequence[int], num_res_blocks: int, latent_dim: int) -> None:
        super().__init__()
        channels = list(channels)
        self.config = dict(in_channels=in_channels, channels=channels, num_res_blocks=num_res_blocks, latent_dim=latent_dim)
        self.downsample_factor = 2 ** (len(channels) - 1)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1)]
        width = channels[0]
        for level, out in enumerate(channels):
            if level > 0:
                layers.append(nn.Conv2d(width, out, 4, stride=2, padding=1))  # H -> H/2
                width = out
            layers.extend(ResBlock2d(width, width) for _ in range(num_res_blocks))
        layers += [_group_norm(width), nn.SiLU(), nn.Conv2d(width, latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ImageDecoder(nn.Module):
    """Mirror of :class:`ImageEncoder`: ``(B, latent_dim, h, w)`` -> ``(B, out_channels, h*f, w*f)``.

    Upsampling is nearest-neighbour followed by a 3x3 conv (no checkerboard artefacts).
    The output is unbounded; images live in [-1, 1] and the loss pulls it there.
    """

    def __init__(self, out_channels: int, channels: Sequence[int], num_res_blocks: int, latent_dim: int) -> None:
        super().__init__()
        channels = list(channels)
        self.config = dict(out_channels=out_channels, channels=channels, num_res_blocks=num_res_blocks, latent_dim=latent_dim)
        reversed_channels = channels[::-1]
        width = reversed_channels[0]
        layers: list[nn.Module] = [nn.Conv2d(latent_dim, width, 3, padding=1)]
        for level, out in enumerate(reversed_channels):
            if level > 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, out, 3, padding=1)]
                width = out
            layers.extend(ResBlock2d(width, width) for _ in range(num_res_blocks))
        layers += [_group_norm(width), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


