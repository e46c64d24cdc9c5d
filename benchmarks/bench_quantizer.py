"""EMA quantizer speed: our ``VectorQuantizer`` against ``vector_quantize_pytorch.VectorQuantize``.

Both run forward + backward in training mode (EMA updates on) on the same ``B x N x D`` input in the
same process. The order alternates every repeat so load drift from other processes hits both
alike; the headline is the median. A FLOP floor (distance matmul + one-hot EMA matmul) turned into
milliseconds with this machine's measured fp32 matmul rate says how far each is from the hardware.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from vector_quantize_pytorch import VectorQuantize

from benchmarks.common import stats, time_s
from pipeline.tokenizer.quantizer import VectorQuantizer

CONFIG: dict[str, Any] = {
    "batch": 256,
    "tokens": 49,
    "dim": 64,
    "codebook_size": 512,
    "decay": 0.99,
    "commitment_weight": 0.25,
    "warmup": 3,
    "repeats": 20,
    "matmul_repeats": 30,
    "target_speedup": 3.0,
    "seed": 0,
    "ours": "VectorQuantizer(64, 512, kmeans_init=False) (decay 0.99, dead_code_threshold 1.0)",
    "theirs": "VectorQuantize(dim=64, codebook_size=512, decay=0.99, kmeans_init=False, commitment_weight=0.25) "
    "(library defaults otherwise: rotation_trick=True, threshold_ema_dead_code=0)",
    "theirs_plain_ste": "the same with rotation_trick=False (plain straight-through, like ours); not the target",
    "step": "forward; loss = sum(quantized * g) + 0.25 * commitment; backward to the input",
}


def _ours_step(model: VectorQuantizer, x: torch.Tensor, grad: torch.Tensor, weight: float) -> Callable[[], None]:
    """Forward + backward of our quantizer, with the commitment loss weighted as the library does."""

    def step() -> None:
        x.grad = None
        out = model(x)
        ((out.quantized * grad).sum() + weight * out.commitment_loss).backward()

    return step


def _theirs_step(model: VectorQuantize, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    """Forward + backward of ``VectorQuantize`` (its loss already carries the commitment weight)."""

    def step() -> None:
        x.grad = None
        quantized, _, loss = model(x)
        ((quantized * grad).sum() + loss.sum()).backward()

    return step


def matmul_gflops(rows: int, inner: int, cols: int, repeats: int) -> float:
    """This machine's fp32 rate (GFLOP/s) on a ``(rows, inner) @ (inner, cols)`` matmul, median of repeats."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    for _ in range(3):
        a @ b
    median_ms = statistics.median(time_s(lambda: a @ b) * 1e3 for _ in range(repeats))
    return 2.0 * rows * inner * cols / (median_ms * 1e-3) / 1e9


def main(out_dir: Path) -> dict[str, Any]:
    """Time both quantizers and the FLOP floor; ``out_dir`` is unused (everything goes in the JSON)."""
    cfg = CONFIG
    torch.manual_seed(cfg["seed"])
    batch, tokens, dim, size = cfg["batch"], cfg["tokens"], cfg["dim"], cfg["codebook_size"]
    x = torch.randn(batch, tokens, dim, requires_grad=True)
    grad = torch.randn(batch, tokens, dim)

    ours = VectorQuantizer(dim, size, decay=cfg["decay"], kmeans_init=False).train()
    common = dict(dim=dim, codebook_size=size, decay=cfg["decay"], kmeans_init=False, commitment_weight=cfg["commitment_weight"])
    theirs = VectorQuantize(**common).train()
    theirs_plain = VectorQuantize(**common, rotation_trick=False).train()
    steps = {
        "ours": _ours_step(ours, x, grad, cfg["commitment_weight"]),
        "theirs": _theirs_step(theirs, x, grad),
        "theirs_plain_ste": _theirs_step(theirs_plain, x, grad),
    }

    for _ in range(cfg["warmup"]):
        for step in steps.values():
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for repeat in range(cfg["repeats"]):
        for name in order if repeat % 2 == 0 else reversed(order):
            samples[name].append(time_s(steps[name]) * 1e3)

    tokens_total = batch * tokens
    flops = {"distance_matmul": 2 * tokens_total * dim * size, "ema_one_hot_matmul": 2 * tokens_total * dim * size}
    total_flops = sum(flops.values())
    rate = matmul_gflops(tokens_total, dim, size, cfg["matmul_repeats"])
    floor_ms = total_flops / (rate * 1e9) * 1e3

    timings = {name: stats(values, "ms") for name, values in samples.items()}
    ours_ms, theirs_ms = timings["ours"]["median_ms"], timings["theirs"]["median_ms"]
    speedup = theirs_ms / ours_ms
    results = {
        "timings": timings,
        "samples_ms": samples,
        "speedup": speedup,
        "speedup_vs_plain_ste": timings["theirs_plain_ste"]["median_ms"] / ours_ms,
        "target_speedup": cfg["target_speedup"],
        "target_met": speedup >= cfg["target_speedup"],
        "flops": {**flops, "total": total_flops},
        "matmul_gflops": rate,
        "floor_ms": floor_ms,
        "ours_over_floor": ours_ms / floor_ms,
        "theirs_over_floor": theirs_ms / floor_ms,
    }
    summary = {
        "ours median (ms)": ours_ms,
        "VectorQuantize median (ms)": theirs_ms,
        "VectorQuantize, plain STE, median (ms)": timings["theirs_plain_ste"]["median_ms"],
        "speedup (theirs / ours)": speedup,
        f"target >= {cfg['target_speedup']:g}x met": results["target_met"],
        "FLOP floor (ms)": floor_ms,
        "fp32 matmul rate (GFLOP/s)": rate,
        "ours / floor": results["ours_over_floor"],
        "theirs / floor": results["theirs_over_floor"],
    }
    return {"config": cfg, "results": results, "summary": summary}
