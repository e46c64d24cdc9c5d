"""What every stage shares: loggers, the Trainer, run directories, and finding earlier stages' outputs."""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from pipeline.callbacks import PlainProgress, interactive_terminal
from pipeline.checkpoint_io import AtomicCheckpointIO
from pipeline.config import flat_config
from pipeline.csv_metrics import ContinuingCSVLogger
from pipeline.diffusion.dit import DiT
from pipeline.diffusion.objectives import Objective
from pipeline.errors import UserError, one_line
from pipeline.interrupts import CheckpointOnSignal
from pipeline.outputs import stage_dir
from pipeline.resume import ResumePoint, find_resume, slurm_job_id
from pipeline.rundir import RunDir, config_hash
from pipeline.strategies import build_strategy
from pipeline.tracking import WandbRunLogger, artifact_reference, run_tags
from pipeline.tokenizer import VQVAE

# .hydra/ is already in the run directory when the CSV logger starts; it only ever replaces its own files.
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")


def example_batch(cfg: DictConfig, batch: int = 1) -> torch.Tensor:
    """Zeros shaped like ``batch`` examples of this data as the tokenizer sees them (``modality.example_shape``)."""
    return torch.zeros(batch, *cfg.modality.example_shape, dtype=getattr(torch, cfg.modality.example_dtype))


def tokenizer_latent_shape(cfg: DictConfig, model: VQVAE) -> list[int]:
    """The latent shape ``[D, *spatial]`` of one example (a dry run of encoder and decoder on zeros),
    or one line when the decoder cannot give an example back at its own size."""
    example = example_batch(cfg)
    try:
        with torch.no_grad():
            latents = model.encode(example)
            output = model.decode(latents)
    except RuntimeError as err:
        raise UserError(f"the vqvae={cfg.vqvae.size} tokenizer cannot take data={cfg.data.name} examples of shape {list(example.shape[1:])}: {one_line(err, 200)}") from None
    ndim = model.encoder.spatial_ndim
    if output.shape[-ndim:] != example.shape[-ndim:]:
        raise UserError(
            f"data={cfg.data.name} examples of length {list(example.shape[-ndim:])} come back from the tokenizer as {list(output.shape[-ndim:])}: "
            f"make them divisible by its downsampling x{model.encoder.downsample_factor}"
        )
    return list(latents.shape[1:])


def start_run(cfg: DictConfig) -> tuple[RunDir, ResumePoint | None, str]:
    """The run directory (a new one, or the one to resume), where it resumes from and the W&B id."""
    resume = find_resume(cfg.resume, stage_dir(cfg, cfg.stage.name))
    run_dir = resume.run_dir if resume else RunDir(cfg.paths.run_dir)
    # a resumed run keeps its id; a W&B sweep agent hands each run the id it registered with the sweep
    wandb_id = run_dir.read().get("wandb_id") or os.environ.get("WANDB_RUN_ID") or secrets.token_hex(4)
    return run_dir, resume, wandb_id


def record_start(cfg: DictConfig, run_dir: RunDir, loggers: list[Logger], wandb_id: str, **fields: Any) -> None:
    """Log the flat config to every logger and write the first ``run.json``."""
    for logger in loggers:
        logger.log_hyperparams(flat_config(cfg))
    run_dir.update(
        stage=cfg.stage.name, data=cfg.data.name, modality=cfg.modality.name, run_name=run_dir.path.name, group=cfg.group,
        config_hash=config_hash(cfg), status="running", **wandb_record(cfg, loggers, wandb_id),
        slurm_job_id=slurm_job_id(), **fields,
    )


def wandb_record(cfg: DictConfig, loggers: list[Logger], wandb_id: str) -> dict[str, Any]:
    """Where the run's W&B record lives (``pipeline.lineage`` finds the synced run by it), or nothing without W&B."""
    if not any(isinstance(logger, WandbLogger) for logger in loggers):
        return {"wandb_id": None}
    return {"wandb_id": wandb_id, "wandb_project": cfg.logger.get("project"), "wandb_entity": cfg.logger.get("entity")}


def build_loggers(cfg: DictConfig, run_dir: RunDir, wandb_id: str | None, resume: ResumePoint | None = None) -> list[Logger]:
    """The configured logger plus ``metrics.csv`` in the run directory (none for ``logger=none``); a
    resumed run continues both (the same W&B run id, the CSV rows before the checkpoint's step)."""
    if cfg.logger.get("_target_") is None:
        return []
    csv = ContinuingCSVLogger(run_dir.path, resume.step if resume else None)
    if cfg.logger._target_.endswith("CSVLogger"):
        return [csv]
    # a resumed run keeps its folder and name (this launch's own folder holds only .hydra/ and the log)
    wandb_logger = instantiate(cfg.logger, id=wandb_id, resume="allow", save_dir=str(run_dir.path), name=run_dir.path.name, tags=run_tags(cfg))
    return [wandb_logger, csv]


def build_trainer(cfg: DictConfig, run_dir: RunDir, loggers: list[Logger], callbacks: list[L.Callback]) -> L.Trainer:
    progress: L.Callback = RichProgressBar() if interactive_terminal() else PlainProgress(cfg.trainer.log_every_n_steps * 2)
    return instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=[*callbacks, progress, LearningRateMonitor(logging_interval="step")] if loggers else [*callbacks, progress],
        enable_progress_bar=isinstance(progress, RichProgressBar),
        default_root_dir=str(run_dir.path),
        strategy=build_strategy(cfg),
        plugins=[] if cfg.strategy.name == "deepspeed" else [AtomicCheckpointIO()],  # DeepSpeed writes its own checkpoint folders
        use_distributed_sampler=False,  # the data modules shard each global batch themselves (pipeline.data.sampling)
    )


def scale_record(cfg: DictConfig, trainer: L.Trainer) -> dict[str, int]:
    """What ``run.json`` says about the run's scale: processes, and the global batch they shared."""
    return {"world_size": trainer.world_size, "global_batch_size": cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches}


def periodic_checkpoint(cfg: DictConfig, run_dir: RunDir) -> list[L.Callback]:
    """``checkpoints/periodic-<step>.ckpt`` every ``checkpoint_every_n_steps`` (the newest only), so a
    killed run loses at most that many steps; ``resume=`` takes the newest checkpoint of the run."""
    every = cfg.get("checkpoint_every_n_steps")
    if not every:
        return []
    return [ModelCheckpoint(dirpath=str(run_dir.checkpoints), filename="periodic-{step}", every_n_train_steps=int(every), save_top_k=1,
                            monitor=None, auto_insert_metric_name=False, enable_version_counter=False)]


def checked_sampler(objective: Objective, sampler: str | None) -> str:
    """The sampler to use (``None``: the objective's default), or one line naming those that fit."""
    try:
        return objective.check_sampler(sampler)
    except ValueError as err:
        raise UserError(f"sample.sampler={sampler}: {err}") from None


def code_temperature(model: DiT, temperature: float, name: str = "sample.temperature") -> float:
    """The softmax temperature a DiT samples with: ``temperature`` (the setting ``name``) for one that predicts codes,
    1 for one that regresses velocities (which has no softmax); one that is not positive is refused with one line."""
    if temperature <= 0:
        raise UserError(f"{name}={temperature} must be > 0")
    return temperature if model.code_head is not None else 1.0


def fit_and_validate(cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule, resume: ResumePoint | None) -> None:
    """Train (a checkpoint to resume from loads with ``weights_only=True``), then validate once more
    when training stopped between two validations, so the final metrics describe the final weights."""
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume.checkpoint) if resume else None, weights_only=True)
    interval = cfg.trainer.val_check_interval
    if isinstance(interval, int) and trainer.global_step % interval:
        trainer.validate(model, datamodule=datamodule, verbose=False)


def record_input(loggers: list[Logger], run_dir: RunDir, kind: str, data: str, path: Path) -> None:
    """Name the file this run reads (a tokenizer, a DiT) in ``run.json`` and as a W&B input (rank 0)."""
    reference = artifact_reference(kind, data, path)
    for logger in loggers:
        if isinstance(logger, WandbRunLogger):
            logger.declare_input(kind, reference)
    run_dir.update(inputs={**run_dir.read().get("inputs", {}), kind: reference})


def record_output(loggers: list[Logger], run_dir: RunDir, kind: str, data: str, path: Path, metadata: dict[str, Any]) -> None:
    """Log the file this run made as a W&B model artifact and name it in ``run.json`` (rank 0)."""
    for logger in loggers:
        if isinstance(logger, WandbRunLogger):
            logger.log_file_artifact(kind, data, path, metadata)
    run_dir.update(artifact=artifact_reference(kind, data, path))


def wandb_logger(loggers: list[Logger]) -> WandbLogger | None:
    return next((logger for logger in loggers if isinstance(logger, WandbLogger)), None)


def finish_loggers(loggers: list[Logger]) -> None:
    """Flush the CSV and close the W&B run (its files are complete only after ``wandb.finish``)."""
    for logger in loggers:
        logger.save()
    if wandb_logger(loggers) is not None:
        import wandb

        wandb.finish()


@contextmanager
def tracked(run_dir: RunDir, loggers: list[Logger], is_global_zero: bool = True, stop: CheckpointOnSignal | None = None) -> Iterator[None]:
    """Mark ``run.json`` failed, with the error, when the block raises, or interrupted when ``stop``
    saved a checkpoint on a signal (raising :class:`Interrupted`); close the loggers either way."""
    try:
        yield
    except SIGTERMException:
        interrupted = stop.interrupted() if stop is not None else None
        if interrupted is None:
            raise
        if is_global_zero:
            run_dir.update(status="interrupted", step=interrupted.step, signal=interrupted.signal_name, checkpoint=str(interrupted.checkpoint))
        raise interrupted from None
    except BaseException as err:
        if is_global_zero:
            try:
                run_dir.update(status="failed", error=f"{type(err).__name__}: {err}"[:500])
            except UserError:  # no room for run.json either: the error that brought us here is the one to report
                pass
        raise
    finally:
        finish_loggers(loggers)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(("val/", "test/"))}


def wandb_run_path(run_dir: RunDir) -> Path | None:
    runs = sorted((run_dir.path / "wandb").glob("*run-*"))
    return runs[-1] if runs else None
