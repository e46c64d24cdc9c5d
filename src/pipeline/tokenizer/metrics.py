"""Codebook statistics as a torchmetrics ``Metric``, so DDP sums the histograms for free."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class CodebookUsage(Metric):
    """Histogram of code indices over an epoch.

    ``compute()`` returns ``usage`` (fraction of codes used at least once) and ``perplexity``
    (exp of the entropy of code frequencies: the effective number of codes in use), averaged
    over the residual levels.
    """

    full_state_update = False

    def __init__(self, codebook_size: int, num_quantizers: int = 1) -> None:
        super().__init__()
        self.codebook_size, self.num_quantizers = codebook_size, num_quantizers
        self.add_state("counts", default=torch.zeros(num_quantizers, codebook_size, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, indices: torch.Tensor) -> None:
        levels = indices.reshape(-1, self.num_quantizers)
        for q in range(self.num_quantizers):
            self.counts[q] += torch.bincount(levels[:, q], minlength=self.codebook_size)

    def compute(self) -> dict[str, torch.Tensor]:
        counts = self.counts.float()
        usage = (counts > 0).float().mean(dim=1)
        probs = counts / counts.sum(dim=1, keepdim=True).clamp(min=1.0)
        entropy = -(probs * probs.clamp(min=1e-12).log()).sum(dim=1)
        return {"usage": usage.mean(), "perplexity": entropy.exp().mean()}
