"""Run directories: ``run.json`` (what ran, its status, final metrics) and the ``latest`` link."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

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
