"""Code corruption: what a tokenizer's decoder may be shown in training instead of the codes of its input.

A stage-two prior gets some latents wrong, and a decoder that has only ever seen the codes of real
data decodes every such slip literally (a wrong code is two wrong letters of text). Trained on
sequences where some codes were swapped for others, the decoder learns to read each code through its
neighbours, as a denoising autoencoder does, and writes likelier data from a prior's imperfect
latents; decoding the codes of real data is unchanged at evaluation (corruption acts in training only).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.tokenizer.quantizer import VectorQuantizer


class CodeCorruption(nn.Module):
    """Swap some of a batch's quantized latents for other codes; each sequence draws its own strength.

    Args:
        max_noise: each sequence adds Gaussian noise of a standard deviation drawn from U(0, max_noise),
            in units of the batch's per-channel spread, and re-quantizes: latents move to nearby codes,
            the kind of slip a prior makes between codes that decode alike.
        max_replace: each sequence then replaces a share drawn from U(0, max_replace) of its latents with
            codes drawn uniformly from the codebook (for residual quantization, every level's code).
    """

    def __init__(self, max_noise: float = 0.0, max_replace: float = 0.0) -> None:
        super().__init__()
        if max_noise < 0 or not 0 <= max_replace <= 1:
            raise UserError(f"vqvae.code_corruption needs max_noise >= 0 and max_replace in [0, 1], got {max_noise} and {max_replace}")
        self.max_noise, self.max_replace = max_noise, max_replace

    @torch.no_grad()
    def forward(self, indices: torch.Tensor, quantizer: VectorQuantizer) -> tuple[torch.Tensor, torch.Tensor]:
        """The codes ``indices (B, N)`` (``(B, N, Q)`` with residual quantization) that ``quantizer`` chose ->
        their code vectors ``(B, N, D)`` with some latents swapped for other codes, and which were swapped ``(B, N)``."""
        codes = quantizer.codes_to_vectors(indices)
        batch, length, dim = codes.shape
        out = codes
        if self.max_noise > 0:
            spread = codes.reshape(-1, dim).float().std(dim=0)
            scale = torch.rand(batch, 1, 1, device=codes.device) * self.max_noise
            out = quantizer.requantize(codes + scale * spread * torch.randn_like(codes))
        if self.max_replace > 0:
            share = torch.rand(batch, 1, device=codes.device) * self.max_replace
            replace = torch.rand(batch, length, device=codes.device) < share
            random_codes = torch.randint(quantizer.codebook_size, (batch, length, quantizer.num_quantizers), device=codes.device)
            out = torch.where(replace.unsqueeze(-1), quantizer.codes_to_vectors(random_codes).to(out), out)
        return out, (out != codes).any(dim=-1)
