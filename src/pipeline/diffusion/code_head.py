"""The frozen tokenizer's codebook inside a DiT that predicts codes (CDCD's score interpolation).

Such a DiT ends in logits over the ``K`` codes for every latent; its clean estimate is the
expected code vector under their softmax, and it trains with cross-entropy against the code each
latent quantizes to. Near-discrete latents (text) are learnt far faster this way than by
regressing their continuous values: the loss says which code, not how far off in an 8-dimensional
space where thousands of codes sit close together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.tokenizer.quantizer import nearest_codes


class CodeHead(nn.Module):
    """Buffers: the raw code vectors ``(K, C)`` and the latent statistics the DiT's inputs are normalized
    with; they travel with the weights (``dit.pt``, checkpoints, the EMA copy).

    Args:
        codebook_size, channels: ``K`` codes of ``C`` channels (the tokenizer's one codebook).
        cosine: the tokenizer quantizes directions (unit-norm codes, ``quantizer.cosine``).
    """

    def __init__(self, codebook_size: int, channels: int, cosine: bool = False) -> None:
        super().__init__()
        self.cosine = cosine
        self.register_buffer("codebook", torch.zeros(codebook_size, channels))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def set_codebook(self, vectors: torch.Tensor) -> None:
        if vectors.shape != self.codebook.shape:
            raise ValueError(f"expected {tuple(self.codebook.shape)} code vectors, got {tuple(vectors.shape)}")
        self.codebook.copy_(vectors)

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std)

    def vectors(self) -> torch.Tensor:
        """The codes in the DiT's normalized latent space ``(K, C)``."""
        return (self.codebook - self.mean) / self.std

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """The code each latent of normalized ``x (B, C, *spatial)`` quantizes to, as the tokenizer picks it: ``(B, *spatial)``."""
        raw = x.movedim(1, -1).float() * self.std + self.mean
        if self.cosine:
            raw = F.normalize(raw, dim=-1)
        return nearest_codes(raw.reshape(-1, raw.shape[-1]), self.codebook).view(raw.shape[:-1])

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Normalized code vectors ``(B, C, *spatial)`` of ``indices (B, *spatial)``."""
        return self.vectors()[indices].movedim(-1, 1)

    def expected(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """The expected normalized code vector under ``softmax(logits / temperature)``: ``(B, K, *spatial)`` -> ``(B, C, *spatial)``.

        A temperature below 1 sharpens each latent's distribution towards its likeliest codes, as in
        language-model sampling: fewer, likelier words for less diversity."""
        probs = (logits.float() / temperature).movedim(1, -1).softmax(dim=-1)
        return (probs @ self.vectors()).movedim(-1, 1).to(logits.dtype)
