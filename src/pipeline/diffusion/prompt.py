"""Prompts from another modality: a frozen tokenizer's latents for a spoken or written prompt, read by a
small trainable transformer into conditioning tokens (for cross-attention) and a pooled vector (for adaLN).

A prompt travels as one tensor ``(B, D + 1, L)``: the source tokenizer's normalized latents ``(D, L)``
and a presence channel that is 1 for a real prompt and 0 for the null prompt. The null prompt is
what classifier-free guidance needs; keeping it inside the tensor lets prompts go wherever class
labels go (batches, ``torch.cat`` in guidance, the samplers) without a second argument.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.diffusion.positions import position_embedding


def with_presence(latents: torch.Tensor) -> torch.Tensor:
    """Normalized prompt latents ``(B, D, L)`` -> prompts ``(B, D + 1, L)`` marked present."""
    return torch.cat([latents, torch.ones_like(latents[:, :1])], dim=1)


def is_present(prompts: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: which rows are real prompts (not the null prompt)."""
    return prompts[:, -1, 0] > 0.5


class PromptEncoder(nn.Module):
    """Prompt latents ``(B, D + 1, L)`` -> tokens ``(B, L / patch, width)`` and a pooled vector ``(B, width)``.

    The latent sequence is cut into patches of ``patch_size`` positions (as the DiT does for 1-D
    latents), embedded, given fixed sin-cos positions and read by ``depth`` pre-norm transformer
    layers. Rows whose presence channel is 0 get the learned null tokens and null vector instead.

    Args:
        in_channels: ``D``, the source tokenizer's latent channels (the presence channel comes on top).
        length: ``L``, latent positions per prompt; ``patch_size`` must divide it.
        width: the DiT's hidden size (the tokens are its cross-attention keys and values).
        patch_size, depth, num_heads: the encoder's shape.
    """

    def __init__(self, in_channels: int, length: int, width: int, patch_size: int = 4, depth: int = 2, num_heads: int = 4) -> None:
        super().__init__()
        if length % patch_size:
            raise ValueError(f"prompt length {length} must be divisible by its patch size {patch_size}")
        self.in_channels, self.length, self.patch_size, self.width = in_channels, length, patch_size, width
        self.num_tokens = length // patch_size
        self.embed = nn.Linear(in_channels * patch_size, width)
        self.register_buffer("pos_embed", position_embedding([self.num_tokens], width)[None], persistent=False)
        layer = nn.TransformerEncoderLayer(width, num_heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.pool = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.null_tokens = nn.Parameter(torch.randn(self.num_tokens, width) * 0.02)
        self.null_pooled = nn.Parameter(torch.zeros(width))

    def forward(self, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = prompts.shape[0]
        latents, present = prompts[:, :-1], is_present(prompts)
        patches = latents.reshape(batch, self.in_channels, self.num_tokens, self.patch_size).permute(0, 2, 1, 3).reshape(batch, self.num_tokens, -1)
        tokens = self.norm(self.layers(self.embed(patches) + self.pos_embed))
        pooled = self.pool(tokens.mean(dim=1))
        keep = present.view(batch, 1, 1)
        tokens = torch.where(keep, tokens, self.null_tokens.to(tokens.dtype).expand_as(tokens))
        pooled = torch.where(keep[:, 0], pooled, self.null_pooled.to(pooled.dtype).expand_as(pooled))
        return tokens, pooled

    def flops_per_sample(self) -> int:
        """Forward matmul FLOPs of one prompt (2 per multiply-add), counted as :meth:`DiT.flops_per_sample` counts."""
        width, tokens = self.embed.out_features, self.num_tokens
        per_token = sum(p.numel() for name, p in self.named_parameters() if p.ndim == 2 and not name.startswith(("null", "pool")))
        pooled = sum(m.weight.numel() for m in self.pool if isinstance(m, nn.Linear))
        attention = len(self.layers.layers) * 2 * tokens * tokens * width
        return 2 * (tokens * per_token + pooled) + 2 * attention
