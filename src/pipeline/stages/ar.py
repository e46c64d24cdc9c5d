"""``stage=ar``: the autoregressive baseline prior on the frozen tokenizer's codes; writes ``ar.pt``.

It trains on the codes of the same latent cache as stage two (quantized once per run), so the
DiT and the AR prior see the same examples and decode through the same tokenizer; ``stage=sample``
and ``stage=eval`` take ``prior=ar``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from pipeline.ar import ARModule, ARPrior, CodeDataModule, save_ar
from pipeline.diffusion import LatentDataModule
from pipeline.interrupts import CheckpointOnSignal
from pipeline.nonfinite import SkipNonFiniteSteps
from pipeline.outputs import latest_output, stage_dir
from pipeline.resume import check_fits
from pipeline.strategies import for_devices
from pipeline.tracking import RunStats
from pipeline.stages.common import (
    build_loggers, build_trainer, fit_and_validate, periodic_checkpoint, record_input, record_output, record_start, scalar_metrics, scale_record,
    start_run, tracked, wandb_run_path,
)
from pipeline.stages.conditioning import class_count
from pipeline.stages.dit import load_matching_tokenizer, resumed_tokenizer


def train_ar(cfg: DictConfig) -> dict[str, Any]:
    """Quantize the latent cache to codes, train the AR prior on them, save ``ar.pt`` (EMA weights)."""
    cfg = for_devices(cfg)
    run_dir, resume, wandb_id = start_run(cfg)
    tokenizer_path = resumed_tokenizer(cfg, resume) if resume else latest_output(cfg, "vqvae", "tokenizer.pt", "tokenizer_ckpt")
    tokenizer = load_matching_tokenizer(cfg, tokenizer_path)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    latent_shape = tokenizer.tokenizer_metadata["latent_shape"]
    latents = LatentDataModule(
        instantiate(cfg.data), tokenizer_path, stage_dir(cfg, "latents"), batch_size=cfg.data.batch_size, hflip=cfg.modality.hflip,
        num_workers=cfg.data.num_workers, shuffle=cfg.data.shuffle, seed=cfg.seed, latent_shape=latent_shape,
    )
    codes = CodeDataModule(latents, tokenizer_path)
    model: ARPrior = instantiate(cfg.ar.model, vocab_size=tokenizer.quantizer.codebook_size, length=math.prod(latent_shape[1:]), num_classes=class_count(cfg))
    module: ARModule = instantiate(cfg.ar, model=model)
    if resume:
        check_fits(resume, module)
    loggers = build_loggers(cfg, run_dir, wandb_id, resume)
    checkpoints = ModelCheckpoint(dirpath=str(run_dir.checkpoints), filename="step-{step}", save_last=True, save_top_k=1, monitor="val/loss",
                                  auto_insert_metric_name=False, enable_version_counter=False)
    stop = CheckpointOnSignal(run_dir.checkpoints / "last.ckpt")
    guard = SkipNonFiniteSteps(cfg.nonfinite_patience, run_dir.checkpoints / "before-divergence.ckpt")
    stats = RunStats(cfg.data.batch_size)
    trainer = build_trainer(cfg, run_dir, loggers, [checkpoints, *periodic_checkpoint(cfg, run_dir), stop, guard, stats])
    if trainer.is_global_zero:
        record_start(cfg, run_dir, loggers, wandb_id, tokenizer=str(tokenizer_path), resumed_from=str(resume.checkpoint) if resume else None)
        record_input(loggers, run_dir, "tokenizer", cfg.data.name, tokenizer_path)
    with tracked(run_dir, loggers, trainer.is_global_zero, stop):
        fit_and_validate(cfg, trainer, module, codes, resume)
        metrics = scalar_metrics(trainer.callback_metrics)
        ar_path = run_dir.path / "ar.pt"
        if trainer.is_global_zero:
            metadata = {
                "data": cfg.data.name, "modality": cfg.modality.name, "tokenizer": str(Path(tokenizer_path).resolve()), "tokenizer_id": codes.tokenizer_id,
                "latent_cache": str(codes.cache_dir), "latent_shape": list(latent_shape), "run_name": run_dir.path.name, "step": trainer.global_step,
            }
            save_ar(module, ar_path, metadata)
            record_output(trainer.loggers, run_dir, "ar", cfg.data.name, ar_path, {**metadata, **metrics})
            run_dir.update(status="finished", metrics=metrics, step=trainer.global_step, ar=str(ar_path), checkpoint=str(run_dir.checkpoints / "last.ckpt"),
                           latent_cache=str(codes.cache_dir), stats=stats.summary, **scale_record(cfg, trainer))
            run_dir.mark_latest()
    return {"run_dir": run_dir.path, "checkpoint": run_dir.checkpoints / "last.ckpt", "ar": ar_path, "latent_cache": codes.cache_dir,
            "wandb_run": wandb_run_path(run_dir), "metrics": metrics}
