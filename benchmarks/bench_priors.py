"""The DiT against the autoregressive baseline prior at equal training time, on MNIST and spoken digits.

For each data set whose stage-one tokenizer exists (``outputs/<data>/vqvae/latest``, made by
``make demo`` and ``make demo MODALITY=audio``), both priors train on that tokenizer's latent cache
through the real CLI, with their default configs, for the same wall-clock training budget. A short
calibration run (16 steps) measures each prior's training time here as ``fixed + per_step * steps``:
``per_step`` from the throughput it logs every 4 steps after the first 4 (``perf/examples_per_sec`` in
its ``metrics.csv``: steady state, past the slow first steps), ``fixed`` the rest of its
``perf/train_seconds`` (start-up, the first steps, one validation). The main run gets
``(budget - fixed) / per_step`` steps, so each finishes its own learning-rate schedule in the same
time. Every run validates once, at its end, so validation costs both priors alike. ``stage=eval`` then scores both the same way (the
reference classifier's conditional accuracy and Frechet distance, with the real-vs-real and
reconstruction references, and sampling seconds per item: DiT 25 Heun steps with guidance 3,
AR temperature 1 over all codes). Runs land under ``outputs/bench/priors/``, never beside the demos.
``PIPELINE_BENCH_PRIORS_BUDGET_S=300``: another training budget per prior (600 s by default);
``PIPELINE_BENCH_PRIORS_DATA=mnist``: only some of the data sets (comma-separated).
``PIPELINE_BENCH_QUICK=1``: a budget of seconds on small synthetic images with an untrained tokenizer (made
here, so it runs without the demos and does not depend on them), to check that it works.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


from benchmarks.common import default_config, default_tokenizer
from benchmarks.run import REPO
from pipeline.stages.common import tokenizer_latent_shape
from pipeline.tokenizer import save_tokenizer

QUICK = os.environ.get("PIPELINE_BENCH_QUICK") == "1"
DATA = ("synthetic_image",) if QUICK else tuple(os.environ.get("PIPELINE_BENCH_PRIORS_DATA", "mnist,spoken_digits").split(","))
QUICK_DATA = ("data.synthetic_per_class=20", "data.val_size=20", "data.test_size=20")
PRIORS = ("dit", "ar")
CONFIG: dict[str, Any] = {
    "quick": QUICK,
    "data": list(DATA),
    "train_budget_s": 600,           # training seconds per prior and data set
    "calibration_steps": 16,         # the calibration run's, throughput logged every calibration_log_every
    "calibration_log_every": 4,
    "eval_num_samples": 500,
    "classifier_epochs": 6,          # the reference classifier's (trained once per data set under the runs' folder)
    "eval": "stage=eval with the default sample settings (DiT: 25 Heun steps, guidance 3.0; AR: temperature 1.0, all codes)",
    "tokenizers": {data: "untrained, made here" if QUICK else f"outputs/{data}/vqvae/latest/tokenizer.pt" for data in DATA},
    "logger": "csv",
}
if QUICK:
    CONFIG.update(train_budget_s=10, calibration_steps=4, calibration_log_every=2, eval_num_samples=20, classifier_epochs=1)
if budget := os.environ.get("PIPELINE_BENCH_PRIORS_BUDGET_S"):  # a shorter (or longer) equal budget; the JSON records it
    CONFIG["train_budget_s"] = float(budget)


def _cli(*overrides: str) -> tuple[dict[str, Any], Path]:
    """One ``python -m pipeline`` run; its ``run.json`` and run directory."""
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "CI": "true"}
    result = subprocess.run([sys.executable, "-m", "pipeline", *overrides], cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"python -m pipeline {' '.join(overrides)} failed: {result.stderr.strip().splitlines()[-1:]}")
    run_dir = Path(next(line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if line.strip().startswith("run_dir:")))
    return json.loads((run_dir / "run.json").read_text()), run_dir


def _steps_for_budget(record: dict[str, Any], run_dir: Path, budget_s: float) -> tuple[int, float, float]:
    """Steps that fill ``budget_s`` of training time, from a calibration run; and its steady seconds per step and
    fixed seconds. The throughput windows after the first give the rate (global batch = mean throughput x time / steps)."""
    steps, seconds = int(record["step"]), float(record["stats"]["perf/train_seconds"])
    batch = float(record["stats"]["perf/mean_examples_per_sec"]) * seconds / steps
    with (run_dir / "metrics.csv").open() as handle:
        rates = [float(row["perf/examples_per_sec"]) for row in csv.DictReader(handle) if row.get("perf/examples_per_sec")]
    if len(rates) < 2:
        raise RuntimeError(f"{run_dir}: the calibration run logged {len(rates)} throughput windows, not at least 2")
    per_step = sum(batch / rate for rate in rates[1:]) / len(rates[1:])
    fixed = max(seconds - per_step * steps, 0.0)
    return max(int((budget_s - fixed) / per_step), 1), per_step, fixed


def untrained_tokenizer(data: str, out: Path) -> Path:
    """The default tokenizer for ``data`` with seeded random weights, saved as stage one saves it (quick mode)."""
    cfg = default_config(f"data={data}", *QUICK_DATA)
    model = default_tokenizer(cfg, seed=0)
    metadata = {"data": data, "modality": cfg.modality.name, "example_shape": list(cfg.modality.example_shape),
                "latent_shape": tokenizer_latent_shape(cfg, model), "num_classes": cfg.data.num_classes, "size_preset": cfg.vqvae.size}
    return save_tokenizer(model, out / "tokenizer" / "tokenizer.pt", metadata)


def bench_data(data: str, out: Path) -> dict[str, Any]:
    tokenizer = untrained_tokenizer(data, out) if QUICK else REPO / CONFIG["tokenizers"][data]
    if not tokenizer.is_file():
        return {"skipped": f"no tokenizer at {tokenizer}: run make demo{' MODALITY=audio' if data == 'spoken_digits' else ''} first"}
    common = (f"data={data}", *(QUICK_DATA if QUICK else ()), f"tokenizer_ckpt={tokenizer}", f"paths.output_dir={out}", f"logger={CONFIG['logger']}",
              f"experiment_name=bench-priors-{data}")
    results: dict[str, Any] = {}
    for prior in PRIORS:
        n = CONFIG["calibration_steps"]
        calibration = _cli(f"stage={prior}", *common, f"trainer.max_steps={n}", f"trainer.val_check_interval={n}",
                           f"trainer.log_every_n_steps={CONFIG['calibration_log_every']}")
        steps, per_step, fixed = _steps_for_budget(*calibration, CONFIG["train_budget_s"])
        start = time.perf_counter()
        trained, _ = _cli(f"stage={prior}", *common, f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}")
        wall = time.perf_counter() - start
        checkpoint = f"{prior}_ckpt={trained[prior]}"
        scored, _ = _cli("stage=eval", f"prior={prior}", checkpoint, *common, f"eval.num_samples={CONFIG['eval_num_samples']}",
                         f"eval.classifier_epochs={CONFIG['classifier_epochs']}")
        scores = json.loads(Path(scored["eval"]).read_text())
        results[prior] = {
            "steps": trained["step"], "train_seconds": trained["stats"]["perf/train_seconds"], "run_wall_s": wall,
            "calibration_s_per_step": per_step, "calibration_fixed_s": fixed, "params": trained["stats"].get("params/trainable"),
            "val_loss": trained["metrics"].get("val/loss"), "eval": scores, "run": trained["run_name"],
        }
    return results


def main(out_dir: Path) -> dict[str, Any]:
    runs = out_dir / "priors"
    results = {data: bench_data(data, runs) for data in DATA}
    summary: dict[str, Any] = {}
    for data, result in results.items():
        if "skipped" in result:
            summary[data] = f"not run: {result['skipped']}"
            continue
        for prior, r in result.items():
            label = f"{data}, {prior}"
            summary[f"{label}: training steps in {CONFIG['train_budget_s']} s"] = r["steps"]
            summary[f"{label}: eval/cond_accuracy"] = r["eval"].get("eval/cond_accuracy")
            summary[f"{label}: eval/fd_classifier"] = r["eval"].get("eval/fd_classifier")
            summary[f"{label}: sampling s/item"] = r["eval"].get("sampling_seconds_per_example")
        summary[f"{data}: fd_classifier recon vs real (reference)"] = result["dit"]["eval"].get("eval/fd_classifier_recon_vs_real")
    return {"config": CONFIG, "results": results, "summary": summary}
