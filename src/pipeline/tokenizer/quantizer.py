"""Vector quantization with an EMA codebook (VQ-VAE-2 / SoundStream style).

Shapes: inputs are ``(B, N, D)``: a batch of N latent vectors of width D. The codebook is
not trained by gradients; it follows an exponential moving average of the encoder outputs
assigned to each code. That keeps codes close to the data and avoids the codebook loss.

Distributed training: the per-code counts and sums are all-reduced before the EMA step, and
every codebook rewrite that uses data (k-means initialisation, dead-code replacement) is done
on rank 0 and broadcast, so all ranks hold the same codebook after every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _gather_from_all_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (equal shapes), concatenated in rank order along dim 0: the global batch."""
    if not _distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def _broadcast_from_rank0(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def kmeans(samples: torch.Tensor, num_clusters: int, iters: int, cosine: bool = False, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on ``samples (M, D)``; returns centroids ``(K, D)`` and cluster sizes ``(K,)``.

    Centroids start from distinct random samples (with replacement when M < K); an empty
    cluster keeps its previous centroid.
    """
    num_samples = samples.shape[0]
    if num_samples >= num_clusters:
        start = torch.randperm(num_samples, generator=generator)[:num_clusters].to(samples.device)
    else:
        start = torch.randint(num_samples, (num_clusters,), generator=generator).to(samples.device)
    centroids = samples[start].clone()
    counts = torch.zeros(num_clusters, device=samples.device, dtype=samples.dtype)
    for _ in range(iters):
        assign = nearest_codes(samples, centroids)
        counts = torch.bincount(assign, minlength=num_clusters).to(samples.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, samples)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        if cosine:
            centroids = F.normalize(centroids, dim=-1)
    return centroids, counts


def nearest_codes(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (squared L2) for each row of ``x (M, D)``.

    ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin, so one
    ``addmm`` gives the whole distance table.
    """
    code_sq = codebook.pow(2).sum(dim=1)
    scores = torch.addmm(code_sq, x, codebook.t(), beta=1.0, alpha=-2.0)  # (M, K)
    return scores.argmin(dim=1)


class EMACodebook(nn.Module):
    """One codebook of ``codebook_size`` vectors of width ``dim``, updated by EMA.

    Its random choices (k-means seeds, re-seeded dead codes) come from its own generator, seeded
    from the global seed at construction, so they do not depend on what else drew random numbers
    (data loaders, a distributed launch): N ranks pick what one process picks. Its state is
    :attr:`generator_state`, which the tokenizer keeps in its training checkpoints.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 1.0,
        cosine: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.dim, self.codebook_size = dim, codebook_size
        self.decay, self.eps = decay, eps
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.cosine = cosine
        embed = torch.randn(codebook_size, dim)
        if cosine:
            embed = F.normalize(embed, dim=-1)
        self.register_buffer("embed", embed)
        self.register_buffer("embed_sum", embed.clone())
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.generator = torch.Generator().manual_seed(torch.initial_seed())

    @property
    def generator_state(self) -> torch.Tensor:
        return self.generator.get_state()

    @generator_state.setter
    def generator_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state.cpu())

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.cosine else x

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.embed)

    def encode(self, flat: torch.Tensor) -> torch.Tensor:
        return nearest_codes(self._prepare(flat), self.embed)

    @torch.no_grad()
    def init_from(self, flat: torch.Tensor) -> None:
        """k-means initialisation from the first global training batch (all ranks' vectors, rank 0's result)."""
        centroids, counts = kmeans(self._prepare(_gather_from_all_ranks(flat.float())), self.codebook_size, self.kmeans_iters, self.cosine, self.generator)
        self.embed.copy_(_broadcast_from_rank0(centroids))
        self.cluster_size.copy_(_broadcast_from_rank0(counts.clamp(min=1.0)))
        self.embed_sum.copy_(self.embed * self.cluster_size[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        """Move each used code towards the mean of the vectors assigned to it."""
        flat = self._prepare(flat.float())
        counts = torch.bincount(indices, minlength=self.codebook_size).to(flat.dtype)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, flat)
        _all_reduce_sum(counts)
        _all_reduce_sum(sums)
        if not bool(sums.isfinite().all()):  # a non-finite encoder output on some rank: keep the codebook (the step is skipped)
            return
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        # Laplace smoothing keeps a code that has (almost) never been used from dividing by zero.
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        embed = self.embed_sum / smoothed[:, None]
        self.embed.copy_(F.normalize(embed, dim=-1) if self.cosine else embed)

    @torch.no_grad()
    def replace_dead_codes(self, flat: torch.Tensor) -> int:
        """Re-seed codes whose EMA usage fell below the threshold with current encoder outputs.

        Returns how many codes were replaced. The dead set is identical on all ranks (the
        statistics were all-reduced); rank 0 draws the replacements from the whole global batch and
        broadcasts them, so N ranks pick what one process with the same global batch would.
        """
        dead = self.cluster_size < self.dead_code_threshold
        num_dead = int(dead.sum())
        if num_dead == 0:
            return 0
        flat = self._prepare(_gather_from_all_ranks(flat.float()))
        flat = flat[flat.isfinite().all(dim=1)]
        if flat.shape[0] == 0:
            return 0
        picks = torch.randint(flat.shape[0], (num_dead,), generator=self.generator).to(flat.device)
        fresh = _broadcast_from_rank0(flat[picks].contiguous())
        self.embed[dead] = fresh
        self.cluster_size[dead] = self.dead_code_threshold
        self.embed_sum[dead] = fresh * self.dead_code_threshold
        return num_dead


@dataclass
class QuantizerOutput:
    """What :class:`VectorQuantizer` returns.

    quantized: ``(B, N, D)`` with straight-through gradients to the input.
    indices: ``(B, N)``, or ``(B, N, Q)`` with ``Q = num_quantizers > 1``.
    commitment_loss: scalar, mean squared distance between inputs and their (detached) codes.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    commitment_loss: torch.Tensor


class VectorQuantizer(nn.Module):
    """EMA vector quantizer, optionally residual (``num_quantizers > 1``, as in SoundStream/EnCodec).

    Args:
        dim: width D of each latent vector.
        codebook_size: codes per codebook.
        num_quantizers: residual stages; each quantizes what the previous ones left over.
        decay: EMA decay of code statistics.
        kmeans_init: initialise each codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations for that initialisation.
        dead_code_threshold: a code whose EMA count falls below this is re-seeded from the batch.
        cosine: compare and store codes on the unit sphere (cosine-similarity codes).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        num_quantizers: int = 1,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 1.0,
        cosine: bool = False,
    ) -> None:
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}")
        if cosine and num_quantizers > 1:
            raise ValueError("cosine codes quantize directions; residual quantization needs Euclidean codes")
        self.dim, self.codebook_size, self.num_quantizers = dim, codebook_size, num_quantizers
        self.cosine = cosine
        self.codebooks = nn.ModuleList(
            EMACodebook(dim, codebook_size, decay, eps, kmeans_init, kmeans_iters, dead_code_threshold, cosine)
            for _ in range(num_quantizers)
        )

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected input (B, N, {self.dim}), got {tuple(x.shape)}")
        batch, length, dim = x.shape
        residual = x.detach().reshape(-1, dim)
        quantized = torch.zeros_like(residual)
        all_indices = []
        for codebook in self.codebooks:
            if self.training and not bool(codebook.initialized):
                codebook.init_from(residual)
            indices = codebook.encode(residual)
            codes = codebook.lookup(indices)  # before the update: a re-seeded code must not replace a used one
            if self.training:
                codebook.ema_update(residual, indices)
                codebook.replace_dead_codes(residual)
            quantized = quantized + codes
            residual = residual - codes
            all_indices.append(indices)
        quantized = quantized.view(batch, length, dim).to(x.dtype)
        target = F.normalize(x, dim=-1) if self.cosine else x
        commitment = F.mse_loss(target, quantized.detach())
        quantized = target + (quantized - target).detach()  # straight-through estimator
        indices = torch.stack(all_indices, dim=-1).view(batch, length, self.num_quantizers)
        if self.num_quantizers == 1:
            indices = indices.squeeze(-1)
        return QuantizerOutput(quantized, indices, commitment)

    @torch.no_grad()
    def requantize(self, x: torch.Tensor) -> torch.Tensor:
        """The summed code vectors ``(..., D)`` that ``x (..., D)`` quantizes to, leaving every codebook as it is."""
        residual = x.reshape(-1, self.dim)
        quantized = torch.zeros_like(residual)
        for codebook in self.codebooks:
            codes = codebook.lookup(codebook.encode(residual))
            quantized, residual = quantized + codes, residual - codes
        return quantized.view(x.shape)

    def codes_to_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """Map indices ``(B, N)`` or ``(B, N, Q)`` back to summed code vectors ``(B, N, D)``."""
        if indices.dim() == 2:
            indices = indices.unsqueeze(-1)
        if indices.shape[-1] != self.num_quantizers:
            raise ValueError(f"expected {self.num_quantizers} index levels, got {indices.shape[-1]}")
        return sum(cb.lookup(indices[..., q]) for q, cb in enumerate(self.codebooks))
