"""A contrastive loss that teaches a DiT's prompt encoder what its prompts are about, without labels.

Through the diffusion loss alone, the encoder of written prompts learnt nothing in 900 steps: which
digit a prompt asks for is a small part of how its latents vary (the template and the position of
the word are most of it), and the DiT's gradient about it is weak until the DiT already uses it.
Here the prompt's conditioning tokens (their mean) and the clean image latents it was paired with are
projected to a shared space and trained CLIP-style (symmetric InfoNCE over the batch): a prompt must
pick out its own image. Same-digit images are alike, so the encoder learns to say which digit, in a
few hundred steps. Only training uses this head; the DiT does not keep it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PromptAlignment(nn.Module):
    """Symmetric InfoNCE between prompt features ``(B, width)`` and the latents ``(B, C, *spatial)`` they were paired with.

    Args:
        latent_shape: ``(C, *spatial)`` of the generated latents.
        width: the prompt features' size (the DiT's hidden size).
        dim: the shared space's size.
        temperature: the initial softmax temperature (learnt, kept at or above 0.01).
    """

    def __init__(self, latent_shape: list[int], width: int, dim: int = 128, temperature: float = 0.07) -> None:
        super().__init__()
        self.latent_head = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(latent_shape), width), nn.SiLU(), nn.Linear(width, dim))
        self.prompt_head = nn.Linear(width, dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    def forward(self, prompt_features: torch.Tensor, latents: torch.Tensor, scored: torch.Tensor | None = None) -> torch.Tensor:
        """The loss over the pairs ``scored`` keeps (bool ``(B,)``, default all: the prompts not dropped to the null prompt)."""
        prompts = F.normalize(self.prompt_head(prompt_features), dim=-1)
        images = F.normalize(self.latent_head(latents), dim=-1)
        if scored is not None:
            prompts, images = prompts[scored], images[scored]
        if not len(prompts):  # every prompt dropped: 0, with every weight still in the graph (DDP expects a gradient for each)
            return 0.0 * (prompts.sum() + images.sum() + self.log_scale)
        logits = self.log_scale.clamp(max=math.log(100)).exp() * prompts @ images.T
        targets = torch.arange(len(logits), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
