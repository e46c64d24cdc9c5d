"""Stage one: train the VQ-VAE tokenizer and write ``tokenizer.pt``."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from pipeline.callbacks import ReconstructionGrid
from pipeline.interrupts import CheckpointOnSignal
from pipeline.nonfinite import SkipNonFiniteSteps
from pipeline.resume import check_fits
from pipeline.rundir import RunDir
from pipeline.strategies import for_devices
from pipeline.tracking import RunStats
from pipeline.stages.common import (
    build_loggers, build_trainer, fit_and_validate, periodic_checkpoint, record_output, record_start, scalar_metrics, scale_record, start_run, tokenizer_latent_shape,
    tracked, wandb_run_path,
)
from pipeline.tokenizer import VQVAE, save_tokenizer


def train_vqvae(cfg: DictConfig) -> dict[str, Any]:
    """Train the tokenizer; returns final metrics and where everything went."""
    cfg = for_devices(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model: VQVAE = instantiate(cfg.vqvae)
    latent_shape = tokenizer_latent_shape(cfg, model)  # refuses shapes the tokenizer cannot take before any file is written
    run_dir, resume, wandb_id = start_run(cfg)
    if resume:
        check_fits(resume, model)
    datamodule = instantiate(cfg.data)
    loggers = build_loggers(cfg, run_dir, wandb_id, resume)
    grid = ReconstructionGrid(instantiate(cfg.modality.media), run_dir.samples, cfg.stage.grid_examples)
    checkpoints = ModelCheckpoint(
        dirpath=str(run_dir.checkpoints), filename="best-{step}", monitor="val/rec_loss", mode="min", save_last=True, save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,  # a run resumed after its folder moved still writes last.ckpt, not last-v1.ckpt
    )
    stop = CheckpointOnSignal(run_dir.checkpoints / "last.ckpt")
    guard = SkipNonFiniteSteps(cfg.nonfinite_patience, run_dir.checkpoints / "before-divergence.ckpt")
    stats = RunStats(cfg.data.batch_size)
    trainer = build_trainer(cfg, run_dir, loggers, [grid, checkpoints, *periodic_checkpoint(cfg, run_dir), stop, guard, stats])
    if trainer.is_global_zero:
        record_start(cfg, run_dir, loggers, wandb_id, resumed_from=str(resume.checkpoint) if resume else None)
    with tracked(run_dir, loggers, trainer.is_global_zero, stop):
        fit_and_validate(cfg, trainer, model, datamodule, resume)
        metrics = scalar_metrics(trainer.callback_metrics)
        trainer.test(model, datamodule=datamodule, verbose=False)
        metrics.update(scalar_metrics(trainer.callback_metrics))
        result = _finish(cfg, trainer, model, datamodule, run_dir, grid, metrics, stats, latent_shape)
    return result


def codebooks_agree(trainer: L.Trainer, model: VQVAE) -> bool:
    """Whether every rank ends with the same codebooks (their EMA statistics are all-reduced, so they
    must): a digest per rank, gathered. A disagreement means the ranks trained different tokenizers."""
    digest = torch.stack([t.double().sum() for book in model.quantizer.codebooks for t in (book.embed, book.embed.square(), book.cluster_size)])
    gathered = trainer.strategy.all_gather(digest)
    return bool((gathered == digest).all())


def _finish(
    cfg: DictConfig, trainer: L.Trainer, model: VQVAE, datamodule: Any, run_dir: RunDir, grid: ReconstructionGrid, metrics: dict[str, float],
    stats: RunStats, latent_shape: list[int],
) -> dict[str, Any]:
    tokenizer_path = run_dir.path / "tokenizer.pt"
    if not codebooks_agree(trainer, model):
        raise RuntimeError(f"the {trainer.world_size} ranks ended with different codebooks; tokenizer.pt not written")
    if trainer.is_global_zero:
        metadata = {
            "data": cfg.data.name, "modality": cfg.modality.name, "example_shape": list(cfg.modality.example_shape),
            "latent_shape": latent_shape, "num_classes": cfg.data.num_classes,
            "size_preset": cfg.vqvae.size, "run_name": run_dir.path.name, "step": trainer.global_step,
        }
        save_tokenizer(model, tokenizer_path, metadata)
        record_output(trainer.loggers, run_dir, "tokenizer", cfg.data.name, tokenizer_path, {**metadata, **metrics})
        run_dir.update(
            status="finished", metrics=metrics, step=trainer.global_step, tokenizer=str(tokenizer_path),
            checkpoint=str(run_dir.checkpoints / "last.ckpt"), reconstruction_grid=str(grid.last_path) if grid.last_path else None,
            data_source=datamodule.source_record.get("source"), codebooks_identical_across_ranks=True, stats=stats.summary, **scale_record(cfg, trainer),
        )
        run_dir.mark_latest()
    return {
        "run_dir": run_dir.path, "checkpoint": run_dir.checkpoints / "last.ckpt", "tokenizer": tokenizer_path,
        "reconstruction_grid": grid.last_path, "wandb_run": wandb_run_path(run_dir), "metrics": metrics,
    }
