"""Stage-two training throughput and model FLOPs utilisation on one GPU: DiT size x compile x strategy.

The real training module (``DiffusionModule`` from ``conf/``: flow objective, AdamW, EMA) in a
Lightning ``Trainer`` with ``bf16-mixed``, on synthetic 32 x 32 x 4 latents (256 tokens at patch
2: the ImageNet-256 shape), for DiT-B/2 and DiT-L/2, eager and ``compile=true``, and under
``strategy=fsdp`` (one device: the sharding machinery's overhead, not its scaling). Latents per
second are timed over steps after a warm-up (compilation happens there) between two CUDA
synchronisations; MFU = 3 x ``DiT.flops_per_sample()`` x latents/s / the GPU's dense bf16 peak
(:data:`PEAK_BF16_TFLOPS`, or ``PIPELINE_PEAK_TFLOPS``). Without CUDA it records why it did not
run; ``PIPELINE_BENCH_QUICK=1`` runs a toy size on the CPU in fp32 to check the code path.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import default_config
from benchmarks.run import QUICK
from pipeline.diffusion import DiT
from pipeline.strategies import build_strategy

# Dense bf16 tensor-core peak (no sparsity), TFLOP/s, by a substring of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "4090": 165.0}

CONFIG: dict[str, Any] = {
    "sizes": ["B", "L"], "latent": [4, 32, 32], "patch_size": 2, "num_classes": 1000, "batch": 256,
    "warmup_steps": 15, "timed_steps": 40, "variants": [("auto", False), ("auto", True), ("fsdp", False)],
    "precision": "bf16-mixed",
}
if QUICK:
    CONFIG.update(sizes=["XS"], latent=[4, 8, 8], num_classes=10, batch=8, warmup_steps=2, timed_steps=3, variants=[("auto", False)], precision="32-true")


class RandomLatents(Dataset):
    """Seeded random latents and labels, made on the fly (nothing to load: the GPU is what is timed)."""

    def __init__(self, length: int, shape: list[int], num_classes: int) -> None:
        self.length, self.shape, self.num_classes = length, shape, num_classes

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        return torch.randn(self.shape, generator=generator), torch.randint(self.num_classes, (), generator=generator)


class StepClock(L.Callback):
    """Wall time over the training steps after ``warmup``, between two device synchronisations."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.end: float | None = None
        self.steps = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step < self.warmup:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        else:
            self.end, self.steps = now, self.steps + 1


def peak_tflops(name: str) -> float | None:
    if os.environ.get("PIPELINE_PEAK_TFLOPS"):
        return float(os.environ["PIPELINE_PEAK_TFLOPS"])
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def run_variant(size: str, strategy: str, compiled: bool, accelerator: str) -> dict[str, Any]:
    cfg = default_config("stage=dit", f"dit={size}", f"strategy={strategy}", f"trainer.accelerator={accelerator}", "trainer.devices=1",
                         f"trainer.precision={CONFIG['precision']}", f"data.batch_size={CONFIG['batch']}")
    channels, *grid = CONFIG["latent"]
    torch.manual_seed(0)
    model = DiT.from_preset(size, input_size=grid, in_channels=channels, patch_size=CONFIG["patch_size"], num_classes=CONFIG["num_classes"])
    module = instantiate(cfg.diffusion, model=model, objective=instantiate(cfg.objective), latent_mean=torch.zeros(channels),
                         latent_std=torch.ones(channels), compile=compiled)
    steps = CONFIG["warmup_steps"] + CONFIG["timed_steps"]  # the clock starts at the end of step warmup_steps
    data = DataLoader(RandomLatents(steps * CONFIG["batch"], CONFIG["latent"], CONFIG["num_classes"]), batch_size=CONFIG["batch"],
                      num_workers=4 if accelerator == "gpu" else 0, pin_memory=accelerator == "gpu")
    clock = StepClock(CONFIG["warmup_steps"])
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=CONFIG["precision"], strategy=build_strategy(cfg), max_steps=steps,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
                        limit_val_batches=0, num_sanity_val_steps=0)
    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, train_dataloaders=data)
    seconds = clock.end - clock.start if clock.start is not None and clock.end is not None else float("nan")
    latents_per_s = clock.steps * CONFIG["batch"] / seconds
    achieved = 3 * model.flops_per_sample() * latents_per_s
    device = torch.cuda.get_device_name() if accelerator == "gpu" else "cpu"
    peak = peak_tflops(device) if accelerator == "gpu" else None
    return {
        "size": size, "strategy": strategy, "compile": compiled, "compiled": bool(module.compiled), "device": device,
        "params": sum(p.numel() for p in model.parameters()), "forward_flops_per_sample": model.flops_per_sample(),
        "timed_steps": clock.steps, "seconds": seconds, "latents_per_s": latents_per_s, "achieved_tflops": achieved / 1e12,
        "peak_bf16_tflops": peak, "mfu": achieved / (peak * 1e12) if peak else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if accelerator == "gpu" else None,
    }


def main(out_dir: Path) -> dict[str, Any]:
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator == "cpu" and not QUICK:
        return {"config": CONFIG, "results": [], "summary": {"not run": "no CUDA device (this benchmark measures GPU throughput and MFU)"}}
    results, summary = [], {}
    for size in CONFIG["sizes"]:
        for strategy, compiled in CONFIG["variants"]:
            result = run_variant(size, strategy, compiled, accelerator)
            results.append(result)
            label = f"DiT-{size}/{CONFIG['patch_size']} {strategy}{' compiled' if compiled else ''}"
            summary[f"{label}: latents/s"] = result["latents_per_s"]
            if result["mfu"] is not None:
                summary[f"{label}: MFU"] = result["mfu"]
    return {"config": CONFIG, "results": results, "summary": summary}
