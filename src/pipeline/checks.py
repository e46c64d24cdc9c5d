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


def check_sample_settings(cfg: DictConfig) -> None:
    """``sample.*`` counts that cannot draw anything."""
    if cfg.stage.name == "sample" and cfg.sample.num < 1:
        raise UserError(f"sample.num must be at least 1 (got {cfg.sample.num})")
    if cfg.sample.steps < 1 or cfg.sample.batch_size < 1:
        raise UserError(f"sample.steps and sample.batch_size must be at least 1 (got {cfg.sample.steps} and {cfg.sample.batch_size})")
