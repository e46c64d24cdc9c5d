"""Sampling time per image for every sampler and step count, with classifier-free guidance.

``pipeline.diffusion.sample_latents`` draws one batch of latents from a DiT XS/2 on the MNIST
latent shape of the default tokenizer, fp32 on CPU, the default guidance scale (so every model call
runs cond and uncond together: twice the batch). Timing does not depend on the weights, so the model is
untrained, its weights drawn small and random so that outputs are not zero (the DiT starts as
zero). A forward hook counts model calls and the rows they evaluate (NFE per image). After a
short warm-up every (objective, sampler, steps) run once per repeat, the order reversed every other
repeat so load drift hits all alike; the headline is the median. Decoding the batch with a
tokenizer (the default MNIST one, random weights) is timed the same way.
``PIPELINE_BENCH_QUICK=1`` shrinks everything to a smoke test (numbers meaningless).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from benchmarks.common import default_config, default_tokenizer, latent_shape, stats, time_s
from pipeline.diffusion import PRESETS, DiT, class_labels, decode_latents, sample_latents
from pipeline.diffusion.objectives import OBJECTIVES, Objective
from pipeline.tokenizer import VQVAE

QUICK = os.environ.get("PIPELINE_BENCH_QUICK") == "1"
MNIST = default_config("data=mnist")
CHANNELS, LATENT_SIZE, _ = latent_shape(MNIST)
DEPTH, HIDDEN_SIZE, NUM_HEADS = PRESETS["XS"]

CONFIG: dict[str, Any] = {
    "quick": QUICK,
    "threads": 2,
    "dtype": "float32",
    "seed": 0,
    "model": {"preset": "XS", "depth": DEPTH, "hidden_size": HIDDEN_SIZE, "num_heads": NUM_HEADS, "patch_size": 2,
              "in_channels": CHANNELS, "input_size": LATENT_SIZE, "num_classes": 10},
    "weight_std": 0.02,
    "batch": 64,
    "cfg_scale": float(MNIST.sample.cfg_scale),
    "objectives": {name: {k: v for k, v in OmegaConf.to_container(default_config(f"objective={name}").objective, resolve=True).items() if k != "_target_"}
                   for name in ("flow", "ddpm")},  # conf/objective/*.yaml
    "runs": {"flow": {"euler": [10, 25, 50], "heun": [10, 25, 50]}, "ddpm": {"ddim": [25, 50, 100], "ddpm": [25, 50, 100]}},
    "tokenizer": "instantiate(cfg.vqvae) for data=mnist (the default tokenizer), seeded random weights; decode = nearest codes + decoder",
    "warmup_steps": 2,
    "repeats": 3,
    "nfe": "model rows evaluated per image: with guidance each call evaluates every image twice (cond + uncond)",
}
if QUICK:  # one thread: on a busy machine two-thread barriers stall every tiny op
    CONFIG.update(threads=1, batch=4, repeats=2, runs={"flow": {"euler": [2], "heun": [2]}, "ddpm": {"ddim": [2], "ddpm": [2]}})
    CONFIG["model"].update(depth=1, hidden_size=64, num_heads=2)



def random_dit() -> DiT:
    """The DiT with every parameter drawn from N(0, weight_std^2): non-zero outputs, stable magnitudes."""
    torch.manual_seed(CONFIG["seed"])
    model = DiT(**CONFIG["model"]).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(std=CONFIG["weight_std"])
    return model


def small_tokenizer() -> VQVAE:
    """The default MNIST tokenizer, random weights, frozen."""
    return default_tokenizer(MNIST, CONFIG["seed"])


class CallCounter:
    """Forward hook: model calls and the rows (batch entries) they evaluated."""

    def __init__(self, model: nn.Module) -> None:
        self.calls = self.rows = 0
        model.register_forward_hook(self)

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.calls += 1
        self.rows += output.shape[0]


def sampler_runs(model: DiT, latents: dict[str, torch.Tensor]) -> dict[str, Callable[[], None]]:
    """``objective/sampler/steps`` -> one seeded ``sample_latents`` call, its result kept in ``latents``; warms each sampler."""
    batch = CONFIG["batch"]
    labels = class_labels(batch, CONFIG["model"]["num_classes"])

    def run(objective: Objective, sampler: str, steps: int, key: str) -> Callable[[], None]:
        def sample() -> None:
            generator = torch.Generator().manual_seed(CONFIG["seed"])
            latents[key] = sample_latents(model, objective, labels, batch, steps, sampler, CONFIG["cfg_scale"], generator, batch)

        return sample

    runs = {}
    for name, samplers in CONFIG["runs"].items():
        objective = OBJECTIVES[name](**CONFIG["objectives"][name])
        for sampler, step_counts in samplers.items():
            run(objective, sampler, CONFIG["warmup_steps"], "warmup")()
            runs.update({f"{name}/{sampler}/{steps}": run(objective, sampler, steps, f"{name}/{sampler}/{steps}") for steps in step_counts})
    return runs


def main(out_dir: Path) -> dict[str, Any]:
    """Time every sampler run and the decode; ``out_dir`` is unused (everything goes in the JSON)."""
    torch.set_num_threads(CONFIG["threads"])
    model, latents = random_dit(), {}
    counter = CallCounter(model)
    runs = sampler_runs(model, latents)
    tokenizer, channels = small_tokenizer(), CONFIG["model"]["in_channels"]

    @torch.no_grad()
    def decode() -> None:  # the last warm-up batch; unit statistics (timing does not depend on them)
        decode_latents(tokenizer, latents["warmup"], torch.zeros(channels), torch.ones(channels))

    decode()
    runs["decode"] = decode

    samples: dict[str, list[float]] = {key: [] for key in runs}
    counts: dict[str, tuple[int, int]] = {}
    order = list(runs)
    for repeat in range(CONFIG["repeats"]):
        for key in order if repeat % 2 == 0 else reversed(order):
            calls, rows = counter.calls, counter.rows
            samples[key].append(time_s(runs[key]))
            counts[key] = (counter.calls - calls, counter.rows - rows)

    batch, results = CONFIG["batch"], {}
    for key, values in samples.items():
        calls, rows = counts[key]
        results[key] = {**stats(values), "samples_s": values, "ms_per_image": statistics.median(values) / batch * 1e3,
                        "model_calls": calls, "nfe_per_image": rows / batch,
                        "output_std": float(latents[key].std()) if key in latents else None}
    summary = {f"{key}, NFE {r['nfe_per_image']:g}/image (ms/image)": r["ms_per_image"] for key, r in results.items() if key != "decode"}
    summary["decode (ms/image)"] = results["decode"]["ms_per_image"]
    return {"config": CONFIG, "results": results, "summary": summary}
