"""``run(cfg)``: one function per stage, dispatched on ``cfg.stage.name``.

Each stage function is pure in the sense the project uses: no globals, no chdir; it writes
only under the run directory (and the shared ``data/`` cache) and returns its results.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from pipeline.callbacks import PlainProgress, ReconstructionGrid, interactive_terminal
from pipeline.config import flat_config
from pipeline.errors import UserError
from pipeline.rundir import RunDir, config_hash, find_resume
from pipeline.tokenizer import VQVAE, save_tokenizer

log = logging.getLogger("pipeline")
# .hydra/ is already in the run directory when the CSV logger starts; it only ever replaces its own files.
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")


def downsample_factor(cfg: DictConfig) -> int:
    """Every encoder level after the first halves the resolution."""
    return 2 ** (len(cfg.vqvae.encoder.channels) - 1)


def check_config(cfg: DictConfig) -> None:
    """Catch contradictions a user can type before any work starts."""
    if cfg.data.modality != cfg.modality.name:
        raise UserError(f"data={cfg.data.name} is {cfg.data.modality} data but modality={cfg.modality.name}; drop the modality= override")
    factor = downsample_factor(cfg)
    if cfg.data.size % factor:
        raise UserError(f"data.size={cfg.data.size} is not divisible by the tokenizer's downsampling x{factor} (vqvae.encoder.channels has {len(cfg.vqvae.encoder.channels)} levels)")
    if OmegaConf.is_missing(cfg.data, "path"):
        raise UserError(f"data={cfg.data.name} needs data.path=DIR (class subfolders of images, IDX files or a pixel CSV)")


def build_loggers(cfg: DictConfig, run_dir: RunDir, wandb_id: str | None) -> list[Logger]:
    """The configured logger plus ``metrics.csv`` in the run directory (none for ``logger=none``)."""
    if cfg.logger.get("_target_") is None:
        return []
    csv = CSVLogger(save_dir=str(run_dir.path), name="", version="")
    if cfg.logger._target_.endswith("CSVLogger"):
        return [csv]
    wandb_logger = instantiate(cfg.logger, id=wandb_id, resume="allow")
    return [wandb_logger, csv]


def build_trainer(cfg: DictConfig, run_dir: RunDir, loggers: list[Logger], callbacks: list[L.Callback]) -> L.Trainer:
    progress: L.Callback = RichProgressBar() if interactive_terminal() else PlainProgress(cfg.trainer.log_every_n_steps * 2)
    return instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=[*callbacks, progress, LearningRateMonitor(logging_interval="step")] if loggers else [*callbacks, progress],
        enable_progress_bar=isinstance(progress, RichProgressBar),
        default_root_dir=str(run_dir.path),
        strategy=cfg.strategy.name,
    )


def finish_wandb(loggers: list[Logger]) -> None:
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(("val/", "test/"))}


def train_vqvae(cfg: DictConfig) -> dict[str, Any]:
    """Stage one: train the tokenizer; returns final metrics and where everything went."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    resumed = find_resume(cfg.resume, Path(cfg.paths.output_dir).resolve() / cfg.data.name / cfg.stage.name)
    run_dir, ckpt_path = resumed if resumed else (RunDir(cfg.paths.run_dir), None)
    previous = run_dir.read()
    wandb_id = previous.get("wandb_id") or _new_wandb_id()
    datamodule = instantiate(cfg.data)
    model: VQVAE = instantiate(cfg.vqvae)
    loggers = build_loggers(cfg, run_dir, wandb_id)
    grid = ReconstructionGrid(run_dir.samples, cfg.stage.grid_images)
    checkpoints = ModelCheckpoint(
        dirpath=str(run_dir.checkpoints), filename="best-{step}", monitor="val/rec_loss", mode="min", save_last=True, save_top_k=1,
        auto_insert_metric_name=False,
    )
    trainer = build_trainer(cfg, run_dir, loggers, [grid, checkpoints])
    for logger in loggers:
        logger.log_hyperparams(flat_config(cfg))
    if trainer.is_global_zero:
        run_dir.update(
            stage=cfg.stage.name, data=cfg.data.name, modality=cfg.modality.name, run_name=run_dir.path.name,
            config_hash=config_hash(cfg), status="running", wandb_id=wandb_id if loggers and isinstance(loggers[0], WandbLogger) else None,
            resumed_from=str(ckpt_path) if ckpt_path else None,
        )
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
        if trainer.global_step % int(cfg.trainer.val_check_interval):
            trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics = scalar_metrics(trainer.callback_metrics)
        trainer.test(model, datamodule=datamodule, verbose=False)
        metrics.update(scalar_metrics(trainer.callback_metrics))
        result = _finish_vqvae(cfg, trainer, model, datamodule, run_dir, grid, metrics)
    except BaseException as err:
        if trainer.is_global_zero:
            run_dir.update(status="failed", error=f"{type(err).__name__}: {err}"[:500])
        raise
    finally:
        finish_wandb(loggers)
    return result


def _finish_vqvae(cfg: DictConfig, trainer: L.Trainer, model: VQVAE, datamodule: Any, run_dir: RunDir, grid: ReconstructionGrid, metrics: dict[str, float]) -> dict[str, Any]:
    tokenizer_path = run_dir.path / "tokenizer.pt"
    if trainer.is_global_zero:
        latent = cfg.data.size // downsample_factor(cfg)
        save_tokenizer(model, tokenizer_path, {
            "data": cfg.data.name, "modality": cfg.modality.name, "channels": cfg.data.channels, "size": cfg.data.size,
            "latent_shape": [cfg.vqvae.encoder.latent_dim, latent, latent], "num_classes": cfg.data.num_classes,
            "size_preset": cfg.vqvae.size, "run_name": run_dir.path.name, "step": trainer.global_step,
        })
        run_dir.update(
            status="finished", metrics=metrics, step=trainer.global_step, tokenizer=str(tokenizer_path),
            checkpoint=str(run_dir.checkpoints / "last.ckpt"), reconstruction_grid=str(grid.last_path) if grid.last_path else None,
            data_source=datamodule.source_record.get("source"),
        )
        run_dir.mark_latest()
    wandb_runs = sorted((run_dir.path / "wandb").glob("*run-*"))
    return {
        "run_dir": run_dir.path, "checkpoint": run_dir.checkpoints / "last.ckpt", "tokenizer": tokenizer_path,
        "reconstruction_grid": grid.last_path, "wandb_run": wandb_runs[-1] if wandb_runs else None, "metrics": metrics,
    }


def _new_wandb_id() -> str:
    import secrets

    return secrets.token_hex(4)


STAGES: dict[str, Callable[[DictConfig], dict[str, Any]]] = {"vqvae": train_vqvae}


def route_lightning_logs() -> None:
    """Lightning adds its own stderr handlers on import; under Hydra's handlers every line would print twice."""
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the stage ``cfg.stage.name`` and return its results."""
    route_lightning_logs()
    name = cfg.stage.name
    if name not in STAGES:
        raise UserError(f"stage={name} is not available yet; valid: {', '.join(STAGES)}")
    torch.set_float32_matmul_precision("high")
    return STAGES[name](cfg)
