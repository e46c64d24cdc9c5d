"""Behaviour of the EMA vector quantizer and the codebook-usage metric (CPU, seeded, fast)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from pipeline.tokenizer import quantizer as quantizer_module
from pipeline.tokenizer.metrics import CodebookUsage
from pipeline.tokenizer.quantizer import EMACodebook, VectorQuantizer


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    """Every test starts from the same RNG state and uses one thread (the machine is shared)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)


def _brute_force_nearest(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Nearest code of each row of ``x (M, D)`` by exhaustive Euclidean distance."""
    return torch.cdist(x.double(), codebook.double()).argmin(dim=1)


def _clustered_data(num_clusters: int, per_cluster: int, dim: int, spread: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Points around ``num_clusters`` centres 10 apart on the coordinate axes; returns (points (M, D), centres (C, D))."""
    centres = 10.0 * torch.eye(dim)[:num_clusters]
    points = centres.repeat_interleave(per_cluster, dim=0) + spread * torch.randn(num_clusters * per_cluster, dim)
    return points[torch.randperm(points.shape[0])], centres


# --- shapes and lookups -------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_quantizers", [1, 3])
@pytest.mark.parametrize("training", [True, False])
def test_output_shapes(num_quantizers: int, training: bool) -> None:
    q = VectorQuantizer(8, 16, num_quantizers=num_quantizers).train(training)
    out = q(torch.randn(2, 5, 8))
    assert out.quantized.shape == (2, 5, 8)
    expected_indices = (2, 5) if num_quantizers == 1 else (2, 5, num_quantizers)
    assert out.indices.shape == expected_indices
    assert out.indices.dtype == torch.long
    assert int(out.indices.min()) >= 0 and int(out.indices.max()) < 16
    assert out.commitment_loss.shape == ()


@pytest.mark.parametrize("num_quantizers", [1, 3])
def test_codes_to_vectors_matches_forward(num_quantizers: int) -> None:
    q = VectorQuantizer(8, 16, num_quantizers=num_quantizers, kmeans_init=True)
    x = torch.randn(4, 6, 8)
    q.train()(x)  # k-means init + one EMA step, so the codebooks are data-dependent
    out = q.eval()(x)
    torch.testing.assert_close(q.codes_to_vectors(out.indices), out.quantized)
    with pytest.raises(ValueError, match="index levels"):
        q.codes_to_vectors(torch.zeros(4, 6, num_quantizers + 1, dtype=torch.long))


def test_eval_forward_leaves_codebook_untouched() -> None:
    q = VectorQuantizer(8, 16, kmeans_init=True).eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q(torch.randn(3, 7, 8))
    for key, value in q.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_nearest_code_matches_brute_force() -> None:
    q = VectorQuantizer(8, 32, kmeans_init=False).eval()
    codebook = torch.randn(32, 8) * 2.0
    with torch.no_grad():
        q.codebooks[0].embed.copy_(codebook)
    x = torch.randn(4, 50, 8) * 2.0
    out = q(x)
    assert torch.equal(out.indices.reshape(-1), _brute_force_nearest(x.reshape(-1, 8), codebook))
    torch.testing.assert_close(out.quantized, codebook[out.indices])


def test_residual_levels_quantize_the_leftover() -> None:
    q = VectorQuantizer(8, 32, num_quantizers=2, kmeans_init=False).eval()
    books = [torch.randn(32, 8) * 2.0, torch.randn(32, 8) * 0.5]
    with torch.no_grad():
        for codebook, values in zip(q.codebooks, books):
            codebook.embed.copy_(values)
    flat = torch.randn(100, 8) * 2.0
    out = q(flat.unsqueeze(0))
    first = _brute_force_nearest(flat, books[0])
    second = _brute_force_nearest(flat - books[0][first], books[1])
    assert torch.equal(out.indices[0, :, 0], first)
    assert torch.equal(out.indices[0, :, 1], second)
    torch.testing.assert_close(out.quantized[0], books[0][first] + books[1][second])


# --- gradients ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_straight_through_gradient_is_identity(training: bool) -> None:
    q = VectorQuantizer(8, 16, kmeans_init=False).train(training)
    x = torch.randn(3, 5, 8, requires_grad=True)
    w = torch.randn(3, 5, 8)
    (q(x).quantized * w).sum().backward()
    assert torch.equal(x.grad, w)


@pytest.mark.parametrize("training", [True, False])
def test_commitment_loss_gradient(training: bool) -> None:
    q = VectorQuantizer(8, 16, kmeans_init=False).train(training)
    x = torch.randn(3, 5, 8, requires_grad=True)
    out = q(x)
    codes = out.quantized.detach()
    torch.testing.assert_close(out.commitment_loss, ((x - codes) ** 2).mean())
    out.commitment_loss.backward()
    torch.testing.assert_close(x.grad, 2.0 * (x.detach() - codes) / x.numel())
    assert all(not buffer.requires_grad for buffer in q.buffers())


# --- EMA statistics -----------------------------------------------------------------------------------------


def test_ema_update_matches_formulas() -> None:
    decay, eps, size, dim = 0.9, 0.1, 6, 4  # a large eps makes the Laplace smoothing visible
    q = VectorQuantizer(dim, size, decay=decay, eps=eps, kmeans_init=False, dead_code_threshold=0.0).train()
    book = q.codebooks[0]
    embed = torch.randn(size, dim)
    embed[-1] = 100.0  # never the nearest code: tests the decay-only path
    old_cluster_size = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5, 2.5])
    old_embed_sum = embed * old_cluster_size[:, None] + 0.1 * torch.randn(size, dim)
    with torch.no_grad():
        book.embed.copy_(embed)
        book.cluster_size.copy_(old_cluster_size)
        book.embed_sum.copy_(old_embed_sum)

    x = torch.randn(2, 20, dim)
    out = q(x)
    flat = x.reshape(-1, dim)
    assign = _brute_force_nearest(flat, embed)
    assert torch.equal(out.indices.reshape(-1), assign)

    one_hot = F.one_hot(assign, size).float()  # (M, K)
    counts = one_hot.sum(dim=0)
    sums = one_hot.t() @ flat
    cluster_size = decay * old_cluster_size + (1 - decay) * counts
    embed_sum = decay * old_embed_sum + (1 - decay) * sums
    total = cluster_size.sum()
    smoothed = (cluster_size + eps) / (total + size * eps) * total
    assert counts[-1] == 0
    torch.testing.assert_close(book.cluster_size, cluster_size)
    torch.testing.assert_close(book.embed_sum, embed_sum)
    torch.testing.assert_close(book.embed, embed_sum / smoothed[:, None])


def test_ema_pulls_codes_to_cluster_means() -> None:
    points, centres = _clustered_data(num_clusters=4, per_cluster=64, dim=8)
    q = VectorQuantizer(8, 4, decay=0.5, kmeans_init=False, dead_code_threshold=0.0).train()
    with torch.no_grad():
        q.codebooks[0].embed.copy_(centres + 1.0)  # each code starts off its cluster but nearest to it
    for _ in range(30):
        q(points.unsqueeze(0))
    assert torch.cdist(q.codebooks[0].embed, centres).diagonal().max() < 0.05


# --- k-means initialisation ---------------------------------------------------------------------------------


def test_kmeans_init_finds_every_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_kmeans = quantizer_module.kmeans

    def counting_kmeans(samples: torch.Tensor, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(samples.shape[0])
        return real_kmeans(samples, *args, **kwargs)

    monkeypatch.setattr(quantizer_module, "kmeans", counting_kmeans)
    points, centres = _clustered_data(num_clusters=4, per_cluster=64, dim=8)
    q = VectorQuantizer(8, 32, kmeans_init=True, dead_code_threshold=0.0).train()
    assert not bool(q.codebooks[0].initialized)

    q(points.unsqueeze(0))
    assert calls == [points.shape[0]]
    assert bool(q.codebooks[0].initialized)
    nearest_code = torch.cdist(centres, q.codebooks[0].embed).min(dim=1).values
    assert nearest_code.max() < 0.5, nearest_code  # clusters are 14 apart, points 0.05 * sqrt(8) from centre
    total_assigned = q.codebooks[0].cluster_size.sum()
    assert total_assigned > 0.9 * points.shape[0]  # statistics came from the k-means counts, not the ones init

    q(torch.randn(1, 10, 8))
    assert calls == [points.shape[0]]
    assert bool(q.codebooks[0].initialized)


def test_kmeans_function_recovers_centres() -> None:
    points, centres = _clustered_data(num_clusters=4, per_cluster=50, dim=6)
    centroids, counts = quantizer_module.kmeans(points, num_clusters=12, iters=10)
    assert centroids.shape == (12, 6) and counts.shape == (12,)
    assert counts.sum() == points.shape[0]
    assert torch.cdist(centres, centroids).min(dim=1).values.max() < 0.5


# --- dead codes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cosine", [False, True])
def test_dead_codes_are_reseeded_from_the_batch(cosine: bool) -> None:
    threshold, dead = 1.0, torch.tensor([3, 7, 11, 14])
    q = VectorQuantizer(8, 16, kmeans_init=False, dead_code_threshold=threshold, cosine=cosine).train()
    book = q.codebooks[0]
    with torch.no_grad():
        book.cluster_size.fill_(50.0)
        book.cluster_size[dead] = 0.1
        far = F.normalize(torch.ones(len(dead), 8), dim=-1)
        book.embed[dead] = far if cosine else 1e3 * far
        book.embed_sum.copy_(book.embed * book.cluster_size[:, None])
    x = torch.randn(2, 32, 8)
    rows = F.normalize(x.reshape(-1, 8), dim=-1) if cosine else x.reshape(-1, 8)

    q(x)
    is_batch_row = (book.embed[dead][:, None, :] == rows[None, :, :]).all(dim=-1).any(dim=-1)
    assert torch.all(is_batch_row), book.embed[dead]
    assert torch.equal(book.cluster_size[dead], torch.full((len(dead),), threshold))
    torch.testing.assert_close(book.embed_sum[dead], book.embed[dead] * threshold)
    alive = torch.ones(16, dtype=torch.bool)
    alive[dead] = False
    assert torch.all(book.cluster_size[alive] >= threshold)


def test_replace_dead_codes_returns_the_count() -> None:
    book = EMACodebook(8, 16, kmeans_init=False, dead_code_threshold=2.0)
    with torch.no_grad():
        book.cluster_size.fill_(5.0)
        book.cluster_size[[0, 5, 9]] = torch.tensor([1.99, 0.0, 0.5])
    flat = torch.randn(40, 8)
    assert book.replace_dead_codes(flat) == 3
    assert book.replace_dead_codes(flat) == 0  # re-seeded codes sit exactly at the threshold


# --- cosine mode and argument checks ------------------------------------------------------------------------


def test_cosine_codes_are_unit_norm() -> None:
    q = VectorQuantizer(8, 16, cosine=True, kmeans_init=True).train()
    ones = torch.ones(16)
    torch.testing.assert_close(q.codebooks[0].embed.norm(dim=-1), ones)
    for _ in range(3):
        out = q(torch.randn(2, 20, 8) * 5.0)
        torch.testing.assert_close(q.codebooks[0].embed.norm(dim=-1), ones)
    torch.testing.assert_close(out.quantized.norm(dim=-1), torch.ones(2, 20))


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="cosine"):
        VectorQuantizer(8, 16, num_quantizers=2, cosine=True)
    with pytest.raises(ValueError, match="num_quantizers"):
        VectorQuantizer(8, 16, num_quantizers=0)
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizer(8, 16, decay=1.0)
    q = VectorQuantizer(8, 16)
    for bad in (torch.randn(4, 8), torch.randn(2, 4, 7), torch.randn(1, 2, 4, 8)):
        with pytest.raises(ValueError, match="expected input"):
            q(bad)


# --- residual quantization ----------------------------------------------------------------------------------


def test_residual_levels_reduce_reconstruction_error() -> None:
    x = torch.randn(8, 64, 8)
    errors = []
    for levels in (1, 2, 3):
        torch.manual_seed(1)
        q = VectorQuantizer(8, 16, num_quantizers=levels, kmeans_init=True).train()
        for _ in range(5):
            q(x)
        errors.append(F.mse_loss(q.eval()(x).quantized, x).item())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.6 * errors[0], errors


# --- codebook usage metric ----------------------------------------------------------------------------------


def test_codebook_usage_uniform_half() -> None:
    metric = CodebookUsage(codebook_size=8)
    metric.update(torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]))
    result = metric.compute()
    torch.testing.assert_close(result["usage"], torch.tensor(0.5))
    torch.testing.assert_close(result["perplexity"], torch.tensor(4.0))


def test_codebook_usage_accumulates_and_averages_levels() -> None:
    metric = CodebookUsage(codebook_size=8, num_quantizers=2)
    # level 0 uses codes 0 and 1 three times to once over both updates; level 1 only code 5
    metric.update(torch.tensor([[[0, 5], [0, 5]]]))
    metric.update(torch.tensor([[[0, 5], [1, 5]]]))
    result = metric.compute()
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(result["usage"], torch.tensor((2 / 8 + 1 / 8) / 2))
    torch.testing.assert_close(result["perplexity"], torch.tensor((math.exp(entropy) + 1.0) / 2))
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        torch.testing.assert_close(metric.compute()["usage"], torch.tensor(0.0))


# --- distributed sync ---------------------------------------------------------------------------------------


def _ddp_worker(rank: int, world_size: int, init_method: str, out_dir: str) -> None:
    """One rank: three training steps on rank-specific data, then save the codebook state."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
    try:
        torch.manual_seed(100 + rank)  # different module init *and* data on each rank
        q = VectorQuantizer(8, 32, kmeans_init=True, dead_code_threshold=2.0).train()
        book = q.codebooks[0]
        replaced: list[int] = []
        real_replace: Callable[[torch.Tensor], int] = book.replace_dead_codes

        def recording_replace(flat: torch.Tensor) -> int:
            replaced.append(real_replace(flat))
            return replaced[-1]

        book.replace_dead_codes = recording_replace
        inputs = [torch.randn(2, 16, 8) * (1.0 + rank) + rank for _ in range(3)]
        for x in inputs:
            q(x)
        torch.save(
            {"embed": book.embed, "cluster_size": book.cluster_size, "embed_sum": book.embed_sum,
             "initialized": book.initialized, "replaced": replaced, "inputs": torch.stack(inputs)},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_ddp_ranks_hold_identical_codebooks(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'pg'}", str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert not torch.allclose(rank0["inputs"], rank1["inputs"])
    assert sum(rank0["replaced"]) > 0 and rank0["replaced"] == rank1["replaced"]
    assert bool(rank0["initialized"]) and bool(rank1["initialized"])
    for key in ("embed", "cluster_size", "embed_sum"):
        assert torch.equal(rank0[key], rank1[key]), key


def test_a_non_finite_batch_leaves_the_codebook_as_it_was() -> None:
    """Non-finite encoder outputs (a diverging step, skipped by the trainer) must not poison the EMA codebook."""
    torch.manual_seed(0)
    q = VectorQuantizer(8, 32, kmeans_init=True, dead_code_threshold=2.0).train()
    q(torch.randn(2, 16, 8))
    book = q.codebooks[0]
    before = {name: buffer.clone() for name, buffer in book.named_buffers()}
    poisoned = torch.randn(2, 16, 8)
    poisoned[0, 3] = float("nan")
    q(poisoned)
    for name, buffer in book.named_buffers():
        assert torch.isfinite(buffer.float()).all(), name
    assert torch.equal(book.embed_sum, before["embed_sum"]) and torch.equal(book.cluster_size, before["cluster_size"])
