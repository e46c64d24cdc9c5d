"""Contradictions a user can type, caught before any work starts and before torch is imported.

``run(cfg)`` calls :func:`check_config` before it imports torch, so a wrong ``modality=`` or a
missing ``data.path`` or ``resume=`` path or a sample count of zero costs a second, not the import of
torch and Lightning.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import UserError
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
    if cfg.get("resume") not in (False, None, "false", "False"):
        resume_target(cfg.resume, Path(cfg.paths.output_dir).resolve() / cfg.data.name / cfg.stage.name)
    if cfg.stage.name in ("sample", "eval"):
        check_sample_settings(cfg)
    check_condition(cfg)


def check_condition(cfg: DictConfig) -> None:
    """Prompts need paired data, and paired data is for stage two: its tokenizers train on each data set alone."""
    paired = "prompts" in cfg.data
    kind = cfg.condition.kind
    if paired and cfg.stage.name == "vqvae":
        raise UserError(
            f"data={cfg.data.name} pairs images with prompts for stage two; train its tokenizers on each data set alone: "
            f"python -m pipeline stage=vqvae data={cfg.data.image.name} (and data=spoken_digits, data=fortunes)"
        )
    if kind in ("text", "audio") and cfg.stage.name != "vqvae" and not paired:
        raise UserError(f"condition={kind} needs prompts paired with images: use data=paired (data={cfg.data.name} has none)")
    if paired and kind in ("text", "audio") and kind not in cfg.data.prompts:
        raise UserError(f"data={cfg.data.name} has no {kind} prompts; valid: condition={' | '.join(sorted(cfg.data.prompts))} (or class, none)")
    if cfg.get("sample", {}).get("prompt") and cfg.stage.name == "sample" and kind not in ("text", "audio"):
        raise UserError(f"sample.prompt is for DiTs trained with condition=text or condition=audio (condition={kind})")


def check_sample_settings(cfg: DictConfig) -> None:
    """``sample.*`` counts that cannot draw anything."""
    if cfg.stage.name == "sample" and cfg.sample.num < 1:
        raise UserError(f"sample.num must be at least 1 (got {cfg.sample.num})")
    if cfg.sample.steps < 1 or cfg.sample.batch_size < 1:
        raise UserError(f"sample.steps and sample.batch_size must be at least 1 (got {cfg.sample.steps} and {cfg.sample.batch_size})")
