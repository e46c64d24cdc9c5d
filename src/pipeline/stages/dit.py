"""Stage two: train a DiT on the frozen tokenizer's cached latents and write ``dit.pt``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from pipeline.callbacks import SampleGrid, class_rows
from pipeline.diffusion import DiffusionModule, DiT, LatentDataModule, file_digest, save_dit
from pipeline.diffusion.alignment import PromptAlignment
from pipeline.diffusion.paired_latents import PairedLatentDataModule
from pipeline.errors import UserError
from pipeline.interrupts import CheckpointOnSignal
from pipeline.nonfinite import SkipNonFiniteSteps
from pipeline.outputs import image_data_name, latest_output, stage_dir
from pipeline.resume import ResumePoint, check_fits
from pipeline.rundir import RunDir
from pipeline.strategies import for_devices
from pipeline.tracking import RunStats
from pipeline.stages.common import (
    build_loggers, build_trainer, checked_sampler, fit_and_validate, periodic_checkpoint, record_input, record_output, record_start, scalar_metrics,
    code_temperature, scale_record, start_run, tracked, wandb_run_path,
)
from pipeline.stages.conditioning import class_count, dit_prompt_options, prompt_kind, prompt_record, training_prompt_tokenizer
from pipeline.tokenizer import VQVAE, load_tokenizer


def load_matching_tokenizer(cfg: DictConfig, path: Path) -> VQVAE:
    """The tokenizer at ``path``, refused with one line when it was made for other data shapes."""
    tokenizer = load_tokenizer(path)
    meta = tokenizer.tokenizer_metadata
    expected = {"modality": cfg.data.modality, "example_shape": list(cfg.modality.example_shape)}
    found = {"modality": meta.get("modality"), "example_shape": meta.get("example_shape") or [meta.get("channels"), meta.get("size"), meta.get("size")]}
    if found != expected:
        raise UserError(f"tokenizer {path} was trained for {found}, but data={cfg.data.name} is {expected}; pass a matching tokenizer_ckpt=")
    return tokenizer


def resumed_tokenizer(cfg: DictConfig, resume: ResumePoint) -> Path:
    """The tokenizer the resumed run trained on (``run.json``): a newer stage-one run must not change its latents.
    An explicit ``tokenizer_ckpt=`` is accepted only when it is that same file."""
    recorded = resume.run_dir.read().get("tokenizer")
    if not recorded or not Path(recorded).is_file():
        raise UserError(f"the tokenizer {resume.run_dir.path} trained on ({recorded}) is gone; it cannot be resumed, start a new run without resume=")
    if cfg.tokenizer_ckpt:
        given = latest_output(cfg, "vqvae", "tokenizer.pt", "tokenizer_ckpt")
        if file_digest(given) != file_digest(Path(recorded)):
            raise UserError(f"tokenizer_ckpt={cfg.tokenizer_ckpt} is not the tokenizer {resume.run_dir.path} trained on ({recorded}); drop tokenizer_ckpt= to resume")
    return Path(recorded)


def build_module(cfg: DictConfig, tokenizer: VQVAE, prompts: PairedLatentDataModule | None = None) -> DiffusionModule:
    """The DiT sized to the tokenizer's latents, conditioned as ``condition`` says (on prompts: sized to the
    latents of the prompt tokenizer that ``prompts`` fill), with the configured objective; statistics come from the cache."""
    channels, *grid = tokenizer.tokenizer_metadata["latent_shape"]
    prompt = dit_prompt_options(cfg, prompts.tokenizer, prompts.prompt_length) if prompts is not None else None
    objective = instantiate(cfg.objective)
    codes = code_options(tokenizer) if objective.predicts_codes else {}
    model: DiT = instantiate(cfg.dit, input_size=grid, in_channels=channels, num_classes=class_count(cfg), prompt=prompt, **codes)
    if model.code_head is not None:
        model.code_head.set_codebook(tokenizer.quantizer.codebooks[0].embed)
    alignment = None
    if prompt is not None and cfg.condition.alignment.weight > 0:
        alignment = PromptAlignment([channels, *grid], model.prompt_encoder.width, cfg.condition.alignment.dim)
    return instantiate(
        cfg.diffusion, model=model, objective=objective, latent_mean=torch.zeros(channels), latent_std=torch.ones(channels), compile=cfg.compile,
        alignment=alignment, alignment_weight=cfg.condition.alignment.weight if alignment is not None else 0.0,
    )


def code_options(tokenizer: VQVAE) -> dict[str, Any]:
    """The DiT options for predicting ``tokenizer``'s codes, refused with one line for residual quantization
    (a latent is then a sum of codes from several books, not one code)."""
    quantizer = tokenizer.quantizer
    if quantizer.num_quantizers != 1:
        raise UserError(
            f"objective.prediction=codes needs a tokenizer with one codebook, this one has {quantizer.num_quantizers} (residual quantization); "
            "use objective.prediction=velocity"
        )
    return {"codebook_size": quantizer.codebook_size, "cosine_codes": quantizer.cosine}


def train_dit(cfg: DictConfig) -> dict[str, Any]:
    """Encode the data once, train the DiT, save ``dit.pt`` (EMA weights) and a final sample grid."""
    cfg = for_devices(cfg)
    checked_sampler(instantiate(cfg.objective), cfg.sample.sampler)  # the sample grids use it: refuse it now, not 500 steps in
    run_dir, resume, wandb_id = start_run(cfg)
    data, images = instantiate(cfg.data), image_data_name(cfg)
    tokenizer_path = resumed_tokenizer(cfg, resume) if resume else latest_output(cfg, "vqvae", "tokenizer.pt", "tokenizer_ckpt", images)
    tokenizer = load_matching_tokenizer(cfg, tokenizer_path)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    latents = LatentDataModule(
        getattr(data, "image", data), tokenizer_path, stage_dir(cfg, "latents", images),
        batch_size=cfg.data.batch_size, hflip=cfg.modality.hflip, num_workers=cfg.data.num_workers, shuffle=cfg.data.shuffle, seed=cfg.seed,
        latent_shape=tokenizer.tokenizer_metadata.get("latent_shape"),
    )
    datamodule: LatentDataModule | PairedLatentDataModule = latents
    prompt_tokenizer_path, prompts = None, None
    if prompt_kind(cfg):
        source = data.prompt_source
        prompt_tokenizer_path, prompt_tokenizer = training_prompt_tokenizer(cfg, source, resume.run_dir.read() if resume else None)
        datamodule = prompts = PairedLatentDataModule(latents, source, prompt_tokenizer, prompt_tokenizer_path)
    module = build_module(cfg, tokenizer, prompts)
    if resume:
        check_fits(resume, module)
    loggers = build_loggers(cfg, run_dir, wandb_id, resume)
    grid = SampleGrid(
        instantiate(cfg.modality.media), tokenizer, run_dir.samples, cfg.stage.grid_every_n_steps, cfg.stage.grid_per_class, cfg.stage.grid_steps,
        cfg.sample.sampler, cfg.sample.cfg_scale, cfg.seed, grid_rows(module.model, datamodule), cfg.sample.snap_to_codes,
        code_temperature(module.model, cfg.sample.temperature),
    )
    checkpoints = ModelCheckpoint(dirpath=str(run_dir.checkpoints), filename="step-{step}", save_last=True, save_top_k=1, monitor="val/loss", auto_insert_metric_name=False,
                                  enable_version_counter=False)
    stop = CheckpointOnSignal(run_dir.checkpoints / "last.ckpt")
    guard = SkipNonFiniteSteps(cfg.nonfinite_patience, run_dir.checkpoints / "before-divergence.ckpt")
    stats = RunStats(cfg.data.batch_size)
    trainer = build_trainer(cfg, run_dir, loggers, [grid, checkpoints, *periodic_checkpoint(cfg, run_dir), stop, guard, stats])
    if trainer.is_global_zero:
        prompts = {"prompt_tokenizer": str(prompt_tokenizer_path)} if prompt_tokenizer_path else {}
        record_start(cfg, run_dir, loggers, wandb_id, tokenizer=str(tokenizer_path), resumed_from=str(resume.checkpoint) if resume else None, **prompts)
        record_input(loggers, run_dir, "tokenizer", images, tokenizer_path)
        if prompt_tokenizer_path is not None:
            record_input(loggers, run_dir, "prompt_tokenizer", str(cfg.condition.tokenizer_data), prompt_tokenizer_path)
    with tracked(run_dir, loggers, trainer.is_global_zero, stop):
        fit_and_validate(cfg, trainer, module, datamodule, resume)
        metrics = scalar_metrics(trainer.callback_metrics)
        result = _finish(cfg, trainer, module, datamodule, tokenizer_path, run_dir, grid, metrics, stats)
    return result


def grid_rows(model: DiT, datamodule: LatentDataModule | PairedLatentDataModule) -> Callable[[], tuple[torch.Tensor | None, list[str]]]:
    """The training grid's rows: one per class, or for a prompt model one held-out (val) prompt per digit."""
    if not isinstance(datamodule, PairedLatentDataModule):
        return lambda: class_rows(model.num_classes)

    def prompt_rows() -> tuple[torch.Tensor, list[str]]:
        bank = datamodule.banks["val"]
        digits = torch.tensor(sorted(bank.by_label))
        return bank.for_labels(digits, torch.zeros_like(digits)), [f"held-out prompt for {d}" for d in digits.tolist()]

    return prompt_rows


def _finish(
    cfg: DictConfig, trainer: L.Trainer, module: DiffusionModule, latents: LatentDataModule | PairedLatentDataModule, tokenizer_path: Path,
    run_dir: RunDir, grid: SampleGrid, metrics: dict[str, float], stats: RunStats,
) -> dict[str, Any]:
    dit_path = run_dir.path / "dit.pt"
    if trainer.is_global_zero:
        metadata = {
            "data": cfg.data.name, "modality": cfg.modality.name, "tokenizer": str(Path(tokenizer_path).resolve()), "tokenizer_id": latents.tokenizer_id,
            "latent_cache": str(latents.cache_dir), "run_name": run_dir.path.name, "step": trainer.global_step,
            "preset": cfg.dit.get("preset"), "objective": module.objective.name,
            "condition": prompt_record(latents.source.modality, latents.tokenizer_path, latents.prompt_mean, latents.prompt_std, latents.prompt_length)
            if isinstance(latents, PairedLatentDataModule) else {"kind": "class" if module.model.num_classes else "none"},
        }
        save_dit(module, dit_path, metadata)
        record_output(trainer.loggers, run_dir, "dit", cfg.data.name, dit_path, {**metadata, **metrics})
        run_dir.update(
            status="finished", metrics=metrics, step=trainer.global_step, dit=str(dit_path), checkpoint=str(run_dir.checkpoints / "last.ckpt"),
            latent_cache=str(latents.cache_dir), sample_grid=str(grid.last_path) if grid.last_path else None, compiled=module.compiled,
            stats=stats.summary, **scale_record(cfg, trainer),
        )
        run_dir.mark_latest()
    return {
        "run_dir": run_dir.path, "checkpoint": run_dir.checkpoints / "last.ckpt", "dit": dit_path, "latent_cache": latents.cache_dir,
        "sample_grid": grid.last_path, "wandb_run": wandb_run_path(run_dir), "metrics": metrics,
    }
