"""DiT training throughput: our ``pipeline.diffusion.DiT`` against diffusers' ``DiTTransformer2DModel``.

One step is forward + MSE to a random target + backward + AdamW step, fp32 on CPU, on the same
input for every model. Each shape runs our DiT in every variant a user can pick from the config
(AdamW for-loop default / ``foreach`` / ``fused``, eager or ``compile=true``), an RMSNorm + SwiGLU
variant (extra information) and diffusers' DiT of the same depth, width, heads and patch. After a
warm-up (which also compiles) every variant runs once per repeat, the order reversed every other
repeat so load drift from other processes hits all alike; the headline is the median step time,
turned into latents per second and into achieved FLOP/s against this machine's fp32 matmul rate,
a large square matmul timed inside the same rotation (the rate and the step times then share the
machine's state: a rate taken once at the start made the share swing from 69% to 103% between runs).
The fastest variant of ours is then profiled (``torch.profiler``, self CPU time per op) to split its step into
matmul kernels, the optimizer, attention and the rest (normalisation, activations, copies: Inductor's generated
kernels when compiled), which bounds the share: with everything but the matmuls free, a step could reach at most
counted FLOPs / matmul-kernel time. ``PIPELINE_BENCH_QUICK=1`` shrinks everything to a smoke test (numbers meaningless).
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel
from torch import nn
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import default_config, latent_shape, stats, time_s
from pipeline.diffusion import PRESETS, DiT

QUICK = os.environ.get("PIPELINE_BENCH_QUICK") == "1"
MNIST_CHANNELS, MNIST_SIZE, _ = latent_shape(default_config("data=mnist"))  # the default tokenizer's latents


def _shape(preset: str, channels: int, ours_size: int, theirs_size: int, batch: int) -> dict[str, Any]:
    depth, hidden_size, num_heads = PRESETS[preset]
    return dict(preset=preset, depth=depth, hidden_size=hidden_size, num_heads=num_heads, channels=channels,
                ours_size=ours_size, theirs_size=theirs_size, batch=batch)


CONFIG: dict[str, Any] = {
    "quick": QUICK,
    "threads": 2,
    "dtype": "float32",
    "seed": 0,
    "patch_size": 2,
    "num_classes": 10,
    "adamw": {"lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0.0},  # the values do not change the time
    "warmup": 3,
    "repeats": 10,
    "profiled_steps": 5,
    "matmul_size": 2048,
    "shapes": {
        "S_8x8x4": _shape("S", channels=4, ours_size=8, theirs_size=8, batch=32),
        f"XS_mnist_{MNIST_CHANNELS}x{MNIST_SIZE}x{MNIST_SIZE}": _shape("XS", channels=MNIST_CHANNELS, ours_size=MNIST_SIZE, theirs_size=MNIST_SIZE + MNIST_SIZE % 2, batch=64),
    },
    "target_speedup": 1.0,
    "target_matmul_share_S": 0.85,
    "ours": "DiT(input_size, in_channels, patch_size=2, depth, hidden_size, num_heads, num_classes=10), t in [0, 1]",
    "variants": "AdamW for-loop (torch's default on CPU; config: diffusion.optimizer.fused=false) / foreach (config: "
    "also +diffusion.optimizer.foreach=true) / fused (the stage-two default), eager or torch.compile(model) (config: compile=true)",
    "default_config_variant": "ours_eager_fused: what `python -m pipeline stage=dit` runs unless told otherwise",
    "theirs": "DiTTransformer2DModel(num_attention_heads, attention_head_dim=width/heads, in_channels, out_channels=in_channels, "
    "num_layers=depth, sample_size, patch_size=2, num_embeds_ada_norm=10, norm_type='ada_norm_zero'), timestep = 1000 t, "
    "eager, AdamW default; called as model(hidden_states=x, timestep=t, class_labels=y).sample",
    "mnist_shape": f"the default MNIST tokenizer's latents ({MNIST_CHANNELS}x{MNIST_SIZE}x{MNIST_SIZE}); at an odd size ours "
    "zero-pads to the next multiple of the patch, and diffusers, which cannot take it, gets that padded size: the same tokens",
    "flops": "training FLOPs = 3 x our DiT.flops_per_sample() x batch for both models (same architecture; diffusers' "
    "per-block copies of the timestep and label embedders, under 1% extra, are not counted)",
}
if QUICK:  # one thread: on a busy machine two-thread barriers stall every tiny op
    CONFIG.update(threads=1, warmup=1, repeats=2, matmul_size=256, profiled_steps=1)
    for shape in CONFIG["shapes"].values():
        shape.update(depth=1, hidden_size=64, num_heads=2, batch=2)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # x, t in [0, 1], y, target


def matmul_step(size: int) -> Callable[[], None]:
    """One fp32 ``size``^3 square matmul: 2 * size^3 FLOPs, timed beside the models for the machine's rate."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return lambda: a @ b


def ours_model(shape: dict[str, Any], **kwargs: Any) -> DiT:
    torch.manual_seed(CONFIG["seed"])
    return DiT(shape["ours_size"], shape["channels"], CONFIG["patch_size"], shape["depth"], shape["hidden_size"],
               shape["num_heads"], num_classes=CONFIG["num_classes"], **kwargs)


def theirs_model(shape: dict[str, Any]) -> DiTTransformer2DModel:
    torch.manual_seed(CONFIG["seed"])
    return DiTTransformer2DModel(
        num_attention_heads=shape["num_heads"], attention_head_dim=shape["hidden_size"] // shape["num_heads"],
        in_channels=shape["channels"], out_channels=shape["channels"], num_layers=shape["depth"],
        sample_size=shape["theirs_size"], patch_size=CONFIG["patch_size"], num_embeds_ada_norm=CONFIG["num_classes"],
        norm_type="ada_norm_zero",
    )


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_step(model: nn.Module, forward: Callable[..., torch.Tensor], batch: Batch, optimizer: dict[str, bool]) -> Callable[[], None]:
    """One forward + MSE + backward + AdamW step of ``forward`` (``model`` or its compiled wrapper)."""
    adamw = CONFIG["adamw"]
    opt = torch.optim.AdamW(model.train().parameters(), lr=adamw["lr"], betas=tuple(adamw["betas"]), weight_decay=adamw["weight_decay"], **optimizer)
    x, t, y, target = batch

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.mse_loss(forward(x, t, y), target).backward()
        opt.step()

    return step


class Variant(NamedTuple):
    step: Callable[[], None]
    flops: int  # forward FLOPs per sample
    params: int


def build_variants(shape: dict[str, Any]) -> dict[str, Variant]:
    """Every variant's training step, all on one shared batch (diffusers on its 8 x 8 twin)."""
    torch.manual_seed(CONFIG["seed"])
    b, c = shape["batch"], shape["channels"]
    x, x_theirs = (torch.randn(b, c, size, size) for size in (shape["ours_size"], shape["theirs_size"]))
    t, y = torch.rand(b), torch.randint(0, CONFIG["num_classes"], (b,))
    target, target_theirs = torch.randn_like(x), torch.randn_like(x_theirs)
    variants = {}
    for compiled in (False, True):
        for opt_name, optimizer in {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}.items():
            model = ours_model(shape)
            step = train_step(model, torch.compile(model) if compiled else model, (x, t, y, target), optimizer)
            variants[f"ours_{'compiled' if compiled else 'eager'}_{opt_name}"] = Variant(step, model.flops_per_sample(), _count(model))
    model = ours_model(shape, norm="rmsnorm", mlp="swiglu")
    variants["ours_rmsnorm_swiglu_eager_default"] = Variant(train_step(model, model, (x, t, y, target), {}), model.flops_per_sample(), _count(model))
    theirs = theirs_model(shape)
    forward = lambda x, t, y: theirs(hidden_states=x, timestep=1000.0 * t, class_labels=y).sample  # noqa: E731
    step = train_step(theirs, forward, (x_theirs, t, y, target_theirs), {})
    variants["diffusers_eager_default"] = Variant(step, variants["ours_eager_default"].flops, _count(theirs))
    return variants


MATMUL = "fp32_matmul"
MATMUL_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"})


def _kind_of_work(op: str) -> str:
    if op in MATMUL_OPS:
        return "matmul"
    if "adamw" in op.lower() or op.startswith("aten::_foreach_"):
        return "optimizer"
    if "scaled_dot_product" in op:
        return "attention"
    return "other"


def step_breakdown(step: Callable[[], None], steps: int) -> dict[str, float]:
    """Seconds per step spent in matmul kernels, the optimizer, attention and everything else (self CPU time of each
    profiled op; under ``compile`` "other" is mostly Inductor's fused elementwise kernels)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        seconds[_kind_of_work(event.key)] += event.self_cpu_time_total / 1e6 / steps
    return {kind: seconds[kind] for kind in ("matmul", "optimizer", "attention", "other")}


def share_bound(breakdown: dict[str, float], train_flops: float, matmul_rate_gflops: float, target: float) -> dict[str, Any]:
    """What the profile says about the matmul-rate share: the ceiling if only the matmuls took time, and how much
    time all the rest may take for ``target`` against how much it takes."""
    matmul_s = breakdown["matmul"]
    rest_s = sum(breakdown.values()) - matmul_s
    target_step_s = train_flops / (target * matmul_rate_gflops * 1e9)
    return {
        "step_s_profiled": sum(breakdown.values()),
        "seconds_per_step": breakdown,
        "matmul_kernels_share_of_rate": train_flops / matmul_s / 1e9 / matmul_rate_gflops,
        "non_matmul_s": rest_s,
        "non_matmul_s_allowed_for_target": target_step_s - matmul_s,
    }


def bench_shape(shape: dict[str, Any]) -> dict[str, Any]:
    """Warm up (a variant whose warm-up raises, e.g. a failed compile, is recorded and dropped), then time all
    and the reference matmul in one rotation."""
    variants, errors = build_variants(shape), {}
    variants[MATMUL] = Variant(matmul_step(CONFIG["matmul_size"]), 0, 0)
    for name, variant in list(variants.items()):
        try:
            for _ in range(CONFIG["warmup"]):
                variant.step()
        except Exception as err:  # torch.compile without a working compiler: record it, keep the others
            errors[name] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"
            del variants[name]
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for repeat in range(CONFIG["repeats"]):
        for name in order if repeat % 2 == 0 else reversed(order):
            samples[name].append(time_s(variants[name].step))

    matmul_samples = samples.pop(MATMUL)
    matmul_rate = 2.0 * CONFIG["matmul_size"] ** 3 / statistics.median(matmul_samples) / 1e9
    timings = {}
    for name, values in samples.items():
        median, variant = statistics.median(values), variants[name]
        achieved = 3 * variant.flops * shape["batch"] / median / 1e9
        timings[name] = {**stats(values), "samples_s": values, "latents_per_s": shape["batch"] / median,
                         "forward_flops_per_sample": variant.flops, "params": variant.params,
                         "achieved_gflops": achieved, "matmul_share": achieved / matmul_rate}
    # The headline "ours": the fastest variant the config offers for the DiT architecture (not RMSNorm/SwiGLU).
    best = max((n for n in timings if n.startswith("ours_") and "rmsnorm" not in n), key=lambda n: timings[n]["latents_per_s"])
    theirs = timings["diffusers_eager_default"]["latents_per_s"]
    train_flops = 3 * variants[best].flops * shape["batch"]
    bound = share_bound(step_breakdown(variants[best].step, CONFIG["profiled_steps"]), train_flops, matmul_rate, CONFIG["target_matmul_share_S"])
    return {
        "matmul_gflops": matmul_rate,
        "matmul_samples_s": matmul_samples,
        "variants": timings,
        "errors": errors,
        "best_ours": best,
        "best_ours_profile": bound,
        "speedup": timings[best]["latents_per_s"] / theirs,
        "speedup_eager_default": timings["ours_eager_default"]["latents_per_s"] / theirs,
        "speedup_default_config": timings["ours_eager_fused"]["latents_per_s"] / theirs,
    }


def main(out_dir: Path) -> dict[str, Any]:
    """Time every variant in both shapes; ``out_dir`` is unused (everything goes in the JSON)."""
    torch.set_num_threads(CONFIG["threads"])
    shapes = {name: bench_shape(shape) for name, shape in CONFIG["shapes"].items()}
    results = {"load_average_end": list(os.getloadavg()), "shapes": shapes}

    summary: dict[str, Any] = {}
    for name, r in shapes.items():
        best, v = r["best_ours"], r["variants"]
        summary[f"{name}: fp32 matmul rate in the same rotation (GFLOP/s)"] = r["matmul_gflops"]
        summary[f"{name}: ours best variant"] = best
        summary[f"{name}: ours (latents/s)"] = v[best]["latents_per_s"]
        summary[f"{name}: diffusers (latents/s)"] = v["diffusers_eager_default"]["latents_per_s"]
        summary[f"{name}: speedup ours/diffusers"] = r["speedup"]
        summary[f"{name}: speedup, ours as configured by default (eager, fused AdamW)"] = r["speedup_default_config"]
        summary[f"{name}: speedup, both eager for-loop AdamW"] = r["speedup_eager_default"]
        summary[f"{name}: ours share of matmul rate"] = v[best]["matmul_share"]
        summary[f"{name}: diffusers share of matmul rate"] = v["diffusers_eager_default"]["matmul_share"]
        bound = r["best_ours_profile"]
        summary[f"{name}: ours profiled, ms per step in matmul / optimizer / attention / other"] = " / ".join(
            f"{1e3 * seconds:.1f}" for seconds in bound["seconds_per_step"].values())
        summary[f"{name}: ours share of matmul rate if only its matmul kernels took time (ceiling)"] = bound["matmul_kernels_share_of_rate"]
        summary[f"{name}: ms per step all but the matmuls may take for {CONFIG['target_matmul_share_S']:.0%} / take"] = (
            f"{1e3 * bound['non_matmul_s_allowed_for_target']:.1f} / {1e3 * bound['non_matmul_s']:.1f}")
        summary[f"{name}: RMSNorm+SwiGLU (latents/s)"] = v["ours_rmsnorm_swiglu_eager_default"]["latents_per_s"]
        summary[f"{name}: target >= {CONFIG['target_speedup']:g}x met"] = r["speedup"] >= CONFIG["target_speedup"]
        if r["errors"]:
            summary[f"{name}: failed variants"] = ", ".join(r["errors"])
    share_s = shapes["S_8x8x4"]["variants"][shapes["S_8x8x4"]["best_ours"]]["matmul_share"]
    summary[f"S: target >= {CONFIG['target_matmul_share_S']:.0%} of matmul rate met"] = share_s >= CONFIG["target_matmul_share_S"]
    return {"config": CONFIG, "results": results, "summary": summary}
