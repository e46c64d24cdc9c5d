"""What every run tells W&B so that runs compare without hand work: metric axes and summaries,
tags, parameter counts, throughput and peak memory, and which files it used and made.

Lightning's ``WandbLogger`` already plots every metric against ``trainer/global_step``. Here each
metric also gets the summary a comparison needs (:mod:`pipeline.metric_goals`), applied the first
time it is logged, so a metric added later is covered without registering it anywhere.

Lineage: stage one logs ``tokenizer.pt`` as the model artifact ``tokenizer-<data>``, stage two
``dit.pt`` as ``dit-<data>``, each with the alias ``id-<file digest>``, so a reference names the
exact file. A run that reads one declares it as an input (``use_artifact``) and records the
reference in its config (``lineage/<kind>``) and ``run.json``; offline, where W&B cannot resolve
a reference, only the record is written, and ``python -m pipeline.lineage`` declares the inputs
through the public API after ``wandb sync``.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from pipeline.fileio import file_digest
from pipeline.metric_goals import metric_summary
from pipeline.strategies import world_size

log = logging.getLogger("pipeline")

STEP_METRIC = "trainer/global_step"


class WandbRunLogger(WandbLogger):
    """``WandbLogger`` that defines each new metric (x-axis: the global step; summary: :func:`metric_summary`)
    before its first value, and logs and declares model artifacts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._defined: set[str] = set()

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._define(metrics)
        super().log_metrics(metrics, step)

    @rank_zero_only
    def _define(self, metrics: dict[str, Any]) -> None:
        for name in sorted(set(metrics) - self._defined - {STEP_METRIC}):
            self.experiment.define_metric(name, step_metric=STEP_METRIC, step_sync=True, summary=metric_summary(name))
            self._defined.add(name)

    @rank_zero_only
    def update_summary(self, values: dict[str, Any]) -> None:
        """Set run-summary values that are not metrics over steps (parameter counts, throughput, peak memory)."""
        self.experiment.summary.update(values)

    @rank_zero_only
    def log_file_artifact(self, kind: str, data: str, path: Path, metadata: dict[str, Any]) -> None:
        """Log ``path`` as the model artifact ``<kind>-<data>`` with the aliases ``latest`` and ``id-<digest>``."""
        import wandb

        artifact = wandb.Artifact(name=f"{kind}-{data}", type="model", metadata=metadata)
        artifact.add_file(str(path))
        self.experiment.log_artifact(artifact, aliases=["latest", f"id-{file_digest(path)}"])

    @rank_zero_only
    def declare_input(self, kind: str, reference: str) -> None:
        """Record ``reference`` as this run's ``lineage/<kind>`` input, and declare it to W&B when online."""
        self.experiment.config.update({f"lineage/{kind}": reference}, allow_val_change=True)
        if self.experiment.offline:
            return
        try:
            self.experiment.use_artifact(reference)
        except Exception as err:  # not uploaded yet (its run was offline): python -m pipeline.lineage declares it later
            log.warning("W&B: cannot declare input %s now (%s); after `wandb sync` of its run: python -m pipeline.lineage", reference, err)


def artifact_reference(kind: str, data: str, path: Path) -> str:
    """The reference that names exactly the file at ``path``: ``<kind>-<data>:id-<digest>``."""
    return f"{kind}-{data}:id-{file_digest(path)}"


def run_tags(cfg: DictConfig) -> list[str]:
    """Tags that filter W&B's run table: modality, tokenizer size, and for stage two on, the prior (DiT size, objective
    and a condition other than class labels; or ``ar``)."""
    tags = [cfg.modality.name, f"vqvae-{cfg.vqvae.size}"]
    if cfg.stage.name == "ar" or cfg.stage.name in ("sample", "eval") and cfg.get("prior") == "ar":
        tags.append("ar")
    elif cfg.stage.name != "vqvae":
        tags += [f"dit-{cfg.dit.get('preset') or 'custom'}", objective_name(cfg.objective._target_)]
        if cfg.condition.kind != "class":
            tags.append(f"condition-{cfg.condition.kind}")
    if world_size(cfg) > 1 or cfg.strategy.name != "auto":
        tags.append(cfg.strategy.name)
    return [*tags, *cfg.get("tags", [])]


def objective_name(target: str) -> str:
    """``flow`` or ``ddpm`` for an objective's ``_target_`` (the name its samples and ``dit.pt`` use)."""
    from pipeline.diffusion.objectives import OBJECTIVES

    leaf = target.rsplit(".", 1)[-1]
    return next((name for name, cls in OBJECTIVES.items() if cls.__name__ == leaf), leaf.lower())


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trained parameters, and frozen ones (an EMA copy, a frozen tokenizer) apart, so sizes compare across stages."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params/trainable": trainable, "params/frozen": sum(p.numel() for p in model.parameters()) - trainable}


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory of this process's training: GPU memory allocated on CUDA, else the peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, KiB on Linux


class RunStats(L.Callback):
    """Logs ``perf/examples_per_sec`` (global, all ranks) over the training steps since the last log, and
    puts parameter counts, mean throughput and peak memory into the W&B summary and :attr:`summary`."""

    def __init__(self, device_batch_size: int) -> None:
        self.device_batch_size = device_batch_size
        self.global_batch_size = device_batch_size
        self.summary: dict[str, float | int] = {}
        self._mark: tuple[float, int] | None = None
        self._start: tuple[float, int] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.summary.update(parameter_counts(pl_module))
        self.global_batch_size = self.device_batch_size * trainer.world_size * trainer.accumulate_grad_batches
        self._start = self._mark = (time.perf_counter(), trainer.global_step)
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._mark is None or trainer.global_step % max(trainer.log_every_n_steps, 1):
            return
        now, step = time.perf_counter(), trainer.global_step
        if step > self._mark[1]:
            pl_module.log("perf/examples_per_sec", (step - self._mark[1]) * self.global_batch_size / (now - self._mark[0]), rank_zero_only=True)
            self._mark = (now, step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and trainer.global_step > self._start[1]:
            seconds = time.perf_counter() - self._start[0]
            self.summary["perf/mean_examples_per_sec"] = (trainer.global_step - self._start[1]) * self.global_batch_size / seconds
            self.summary["perf/train_seconds"] = seconds
        self.summary["perf/peak_memory_gb"] = peak_memory_gb(pl_module.device)
        for logger in trainer.loggers:
            if isinstance(logger, WandbRunLogger):
                logger.update_summary(self.summary)
