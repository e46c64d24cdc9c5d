"""Encoders and decoders for 1-D signals: waveforms (audio) and byte sequences (text).

Both are residual 1-D conv stacks; each level after the first downsamples the sequence by its
entry in ``strides`` (a strided conv), and the decoder mirrors it with nearest-neighbour
upsampling + conv. Like the image networks, each keeps its plain keyword arguments in
``self.config`` so a tokenizer file can rebuild it without pickled objects; :data:`NETWORKS`
names every network a tokenizer file may ask for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pipeline.tokenizer.networks import ImageDecoder, ImageEncoder, _group_norm


class ResBlock1d(nn.Module):
    """Pre-activation residual block: (norm, SiLU, conv) x 2 plus a skip; the first conv may be dilated."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _group_norm(channels), nn.SiLU(), nn.Conv1d(channels, channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation),
            _group_norm(channels), nn.SiLU(), nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _down_stack(channels: list[int], strides: list[int], num_res_blocks: int) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    width = channels[0]
    for level, out in enumerate(channels):
        if level > 0:
            stride = strides[level - 1]
            layers.append(nn.Conv1d(width, out, 2 * stride, stride=stride, padding=stride // 2))  # L -> L / stride
            width = out
        layers.extend(ResBlock1d(width, dilation=3**i) for i in range(num_res_blocks))
    return layers, width


def _up_stack(channels: list[int], strides: list[int], num_res_blocks: int) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    reversed_channels, reversed_strides = channels[::-1], strides[::-1]
    width = reversed_channels[0]
    for level, out in enumerate(reversed_channels):
        if level > 0:
            layers += [nn.Upsample(scale_factor=reversed_strides[level - 1], mode="nearest"), nn.Conv1d(width, out, 3, padding=1)]
            width = out
        layers.extend(ResBlock1d(width, dilation=3**i) for i in range(num_res_blocks))
    return layers, width


def _check(channels: Sequence[int], strides: Sequence[int]) -> tuple[list[int], list[int]]:
    channels, strides = list(channels), list(strides)
    if len(strides) != len(channels) - 1 or any(s < 2 or s % 2 for s in strides):
        raise ValueError(f"strides must be one even factor >= 2 per level after the first: {len(channels) - 1} for channels {channels}, got {strides}")
    return channels, strides


class AudioEncoder(nn.Module):
    """``(B, in_channels, T)`` waveforms -> ``(B, latent_dim, T / f)``, ``f`` the product of ``strides``."""

    spatial_ndim = 1

    def __init__(self, in_channels: int, channels: Sequence[int], strides: Sequence[int], num_res_blocks: int, latent_dim: int) -> None:
        super().__init__()
        channels, strides = _check(channels, strides)
        self.config = dict(in_channels=in_channels, channels=channels, strides=strides, num_res_blocks=num_res_blocks, latent_dim=latent_dim)
        self.downsample_factor = math.prod(strides)
        body, width = _down_stack(channels, strides, num_res_blocks)
        self.net = nn.Sequential(nn.Conv1d(in_channels, channels[0], 7, padding=3), *body, _group_norm(width), nn.SiLU(), nn.Conv1d(width, latent_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AudioDecoder(nn.Module):
    """Mirror of :class:`AudioEncoder`: ``(B, latent_dim, t)`` -> ``(B, out_channels, t * f)`` in [-1, 1] (tanh)."""

    def __init__(self, out_channels: int, channels: Sequence[int], strides: Sequence[int], num_res_blocks: int, latent_dim: int) -> None:
        super().__init__()
        channels, strides = _check(channels, strides)
        self.config = dict(out_channels=out_channels, channels=channels, strides=strides, num_res_blocks=num_res_blocks, latent_dim=latent_dim)
        body, width = _up_stack(channels, strides, num_res_blocks)
        self.net = nn.Sequential(
            nn.Conv1d(latent_dim, channels[-1], 3, padding=1), *body, _group_norm(width), nn.SiLU(), nn.Conv1d(width, out_channels, 7, padding=3), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class TextEncoder(nn.Module):
    """``(B, L)`` byte ids -> byte embeddings -> ``(B, latent_dim, L / f)``."""

    spatial_ndim = 1

    def __init__(self, vocab_size: int, channels: Sequence[int], strides: Sequence[int], num_res_blocks: int, latent_dim: int) -> None:
        super().__init__()
        channels, strides = _check(channels, strides)
        self.config = dict(vocab_size=vocab_size, channels=channels, strides=strides, num_res_blocks=num_res_blocks, latent_dim=latent_dim)
        self.downsample_factor = math.prod(strides)
        self.embed = nn.Embedding(vocab_size, channels[0])
        body, width = _down_stack(channels, strides, num_res_blocks)
        self.net = nn.Sequential(*body, _group_norm(width), nn.SiLU(), nn.Conv1d(width, latent_dim, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(self.embed(tokens).transpose(1, 2))


class TextDecoder(nn.Module):
    """Mirror of :class:`TextEncoder`: ``(B, latent_dim, t)`` -> byte logits ``(B, vocab_size, t * f)``."""

    def __init__(self, vocab_size: int, channels: Sequence[int], strides: Sequence[int], num_res_blocks: int, latent_dim: int) -> None:
        super().__init__()
        channels, strides = _check(channels, strides)
        self.config = dict(vocab_size=vocab_size, channels=channels, strides=strides, num_res_blocks=num_res_blocks, latent_dim=latent_dim)
        body, width = _up_stack(channels, strides, num_res_blocks)
        self.net = nn.Sequential(nn.Conv1d(latent_dim, channels[-1], 3, padding=1), *body, _group_norm(width), nn.SiLU(), nn.Conv1d(width, vocab_size, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


NETWORKS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (ImageEncoder, ImageDecoder, AudioEncoder, AudioDecoder, TextEncoder, TextDecoder)}
