"""Contradictions a user can type, caught before any work starts and before torch is imported.

``run(cfg)`` calls :func:`check_config` before it imports torch, so a wrong ``modality=`` or a
missing ``data.path`` or ``resume=`` path or a sample count of zero costs a second, not the import of
torch and Lightning.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.detect import prompt_kind_error
from pipeline.errors import UserError
from pipeline.outputs import data_args, image_data_name, latest_output, stage_dir
from pipeline.resume import resume_target


def check_config(cfg: DictConfig) -> None:
    """Catch contradictions a user can type before any work starts (every stage)."""
    if cfg.data.modality != cfg.modality.name:
        raise UserError(f"data={cfg.data.name} is {cfg.data.modality} data but modality={cfg.modality.name}; drop the modality= override")
    if OmegaConf.is_missing(cfg.data, "path"):
        raise UserError(f"data={cfg.data.name} needs data.path={cfg.modality.path_help}")
    path = cfg.data.get("path")
    if path and not Path(str(path)).expanduser().exists():
        raise UserError(f"data.path {path} does not exist")
    if OmegaConf.is_missing(cfg.data, "table"):
        raise UserError(f"data={cfg.data.name} needs data.table=TABLE: a Hugging Face dataset id, a dataset folder, or a .csv / .jsonl / .parquet file")
    resuming = resume_target(cfg.get("resume"), stage_dir(cfg, cfg.stage.name)) is not None  # resume= or a requeued SLURM job
    if cfg.stage.name in ("sample", "eval"):
        check_sample_settings(cfg)
    if cfg.stage.name == "dit":
        check_ema(cfg.diffusion)
    check_condition(cfg)
    check_inputs(cfg, resuming)


def check_condition(cfg: DictConfig) -> None:
    """Prompts need paired data and the DiT; paired data is for the DiT alone (tokenizers and the AR baseline train on each data set)."""
    paired = "prompts" in cfg.data
    kind, stage = cfg.condition.kind, cfg.stage.name
    if paired and stage in ("vqvae", "ar"):
        raise UserError(
            f"data={cfg.data.name} pairs images with prompts for the DiT; stage={stage} runs on each data set alone: "
            f"python -m pipeline stage={stage} {data_args(cfg, cfg.data.image.name)}" + (" (and data=spoken_digits, data=fortunes)" if stage == "vqvae" else "")
        )
    if stage in ("sample", "eval") and cfg.get("prior", "dit") not in ("dit", "ar"):
        raise UserError(f"prior={cfg.prior}: valid: dit, ar")
    if kind in ("text", "audio") and (stage == "ar" or stage in ("sample", "eval") and cfg.get("prior") == "ar"):
        raise UserError(f"the AR baseline is class-conditional or unconditional: condition={kind} needs the DiT (prior=dit)")
    if kind in ("text", "audio") and stage in ("dit", "sample", "eval") and not paired:
        raise UserError(f"condition={kind} needs prompts paired with images: use data=paired (data={cfg.data.name} has none)")
    if paired and kind in ("text", "audio") and kind not in cfg.data.prompts:
        raise UserError(f"data={cfg.data.name} has no {kind} prompts; valid: condition={' | '.join(sorted(cfg.data.prompts))} (or class, none)")
    if cfg.get("sample", {}).get("prompt") and stage == "sample" and kind not in ("text", "audio"):
        raise UserError(f"sample.prompt is for DiTs trained with condition=text or condition=audio (condition={kind})")


def check_ema(diffusion: DictConfig) -> None:
    """The DiT's weight average: a decay in [0, 1) and a ramp constant above 1 (:func:`pipeline.diffusion.ema.ema_update`)."""
    decay, warmup = diffusion.ema_decay, diffusion.ema_warmup
    if not 0 <= decay < 1 or not warmup > 1:
        raise UserError(f"diffusion.ema_decay must be in [0, 1) and diffusion.ema_warmup > 1 (got {decay} and {warmup})")


def check_inputs(cfg: DictConfig, resuming: bool) -> None:
    """What earlier stages must have made: the tokenizers a new stage-two run trains on (a resumed one takes those
    its ``run.json`` names), the prior that sampling and evaluation use, and the file a prompt names. Missing: one
    line with the command that makes it."""
    stage, kind = cfg.stage.name, cfg.condition.kind
    if stage in ("dit", "ar") and not resuming:
        latest_output(cfg, "vqvae", "tokenizer.pt", "tokenizer_ckpt", image_data_name(cfg))
        if stage == "dit" and kind in ("text", "audio"):
            latest_output(cfg, "vqvae", "tokenizer.pt", "condition.tokenizer_ckpt", str(cfg.condition.tokenizer_data))
    prompt = cfg.get("sample", {}).get("prompt")
    if stage == "sample" and prompt and kind in ("text", "audio") and (error := prompt_kind_error(str(prompt), kind)):
        raise UserError(error)
    if stage in ("sample", "eval"):
        prior = cfg.get("prior", "dit")
        latest_output(cfg, prior, f"{prior}.pt", f"{prior}_ckpt")


def check_sample_settings(cfg: DictConfig) -> None:
    """``sample.*`` counts that cannot draw anything."""
    if cfg.stage.name == "sample" and cfg.sample.num < 1:
        raise UserError(f"sample.num must be at least 1 (got {cfg.sample.num})")
    if cfg.sample.steps < 1 or cfg.sample.batch_size < 1:
        raise UserError(f"sample.steps and sample.batch_size must be at least 1 (got {cfg.sample.steps} and {cfg.sample.batch_size})")
    if cfg.sample.grid_shift is not None and cfg.sample.grid_shift <= 0:
        raise UserError(f"sample.grid_shift must be > 0 (got {cfg.sample.grid_shift})")
    restart = cfg.sample.restart
    numbers = isinstance(restart.count, int) and isinstance(restart.steps, int) and all(isinstance(v, (int, float)) for v in (restart.time, restart.temperature))
    if not numbers or restart.count < 0 or restart.steps < 1 or not 0 < restart.time < 1 or not restart.temperature > 0:
        raise UserError(
            f"sample.restart needs count >= 0, steps >= 1, 0 < time < 1 and temperature > 0 "
            f"(got count {restart.count}, time {restart.time}, steps {restart.steps}, temperature {restart.temperature})"
        )
