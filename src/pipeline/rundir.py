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


def find_resume(resume: Any, stage_dir: Path) -> tuple[RunDir, Path] | None:
    """Resolve ``resume`` (false | true | PATH) to the run to continue and its checkpoint."""
    if resume in (False, None, "false", "False"):
        return None
    if resume in (True, "true", "True"):
        candidates = sorted(
            (p for p in stage_dir.glob("*/checkpoints/last.ckpt") if RunDir(p.parents[1]).read().get("status") != "finished"),
            key=lambda p: p.stat().st_mtime,
        )
        if not candidates:
            raise UserError(f"resume=true: no unfinished run with checkpoints/last.ckpt under {stage_dir}; start one without resume")
        ckpt = candidates[-1]
        return RunDir(ckpt.parents[1]), ckpt
    path = Path(str(resume)).expanduser()
    ckpt = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
    if not ckpt.is_file():
        raise UserError(f"resume={resume}: no checkpoint at {ckpt}; pass a run directory or a .ckpt file")
    return RunDir(ckpt.parents[1]), ckpt
