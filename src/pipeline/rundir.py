"""Run directories: ``run.json`` (what ran, its status, final metrics) and the ``latest`` link."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import UserError
from pipeline.fileio import point_symlink, write_json

RUN_FILE = "run.json"


def config_hash(cfg: DictConfig) -> str:
    """Hash of the resolved config without the per-launch keys, so equal recipes hash equal."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in ("run_name", "resume", "paths"):
        plain.pop(key, None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]


class RunDir:
    """One run's folder: ``outputs/<data>/<stage>/<run_name>/``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    def read(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / RUN_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def update(self, **fields: Any) -> dict[str, Any]:
        record = {**self.read(), **fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(self.path / RUN_FILE, record)
        return record

    def mark_latest(self) -> None:
        """Point the sibling ``latest`` link at this run (call only once it finished)."""
        point_symlink(self.path.parent / "latest", self.path.name)


def newest_checkpoint(folder: Path) -> Path | None:
    """The most recently written ``*.ckpt`` in ``folder`` (``last.ckpt`` at validations, ``periodic-*.ckpt``
    every ``checkpoint_every_n_steps``, ``before-divergence.ckpt``), or None."""
    checkpoints = [p for p in folder.glob("*.ckpt") if not p.name.startswith(".")] if folder.is_dir() else []
    return max(checkpoints, key=lambda p: p.stat().st_mtime_ns) if checkpoints else None


def find_resume(resume: Any, stage_dir: Path) -> tuple[RunDir, Path] | None:
    """Resolve ``resume`` (false | true | PATH) to the run to continue and its newest checkpoint."""
    if resume in (False, None, "false", "False"):
        return None
    if resume in (True, "true", "True"):
        unfinished = [RunDir(p) for p in stage_dir.iterdir() if p.is_dir() and not p.is_symlink()] if stage_dir.is_dir() else []
        candidates = [(run, ckpt) for run in unfinished if run.read().get("status") != "finished" and (ckpt := newest_checkpoint(run.checkpoints))]
        if not candidates:
            raise UserError(f"resume=true: no unfinished run with a checkpoint under {stage_dir}; start one without resume")
        return max(candidates, key=lambda pair: pair[1].stat().st_mtime_ns)
    path = Path(str(resume)).expanduser()
    ckpt = newest_checkpoint(path / "checkpoints") if path.is_dir() else path
    if ckpt is None or not ckpt.is_file():
        raise UserError(f"resume={resume}: no checkpoint at {path / 'checkpoints' if path.is_dir() else path}; pass a run directory or a .ckpt file")
    return RunDir(ckpt.parents[1]), ckpt
