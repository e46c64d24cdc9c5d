"""Which checkpoint a run continues from, and whether this config can continue from it.

``resume=true`` takes the newest unfinished run of the stage, ``resume=PATH`` a run directory or a
``.ckpt``; a SLURM job that the scheduler requeued (``SLURM_RESTART_COUNT`` > 0) continues the
run its first start made, without being told. The checkpoint is opened memory-mapped before any
training starts, so a corrupt file or one from another model size ends in one line, not a
traceback halfway through Lightning's restore.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError, one_line
from pipeline.rundir import RunDir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePoint:
    """A run directory to continue, its checkpoint, and the step that checkpoint holds."""

    run_dir: RunDir
    checkpoint: Path
    step: int
    weight_shapes: dict[str, tuple[int, ...]]


def slurm_job_id() -> str | None:
    """The scheduler's id of this job (``<array job>_<task>`` for array jobs), or None outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def run_checkpoints(run_dir: RunDir) -> list[Path]:
    """Every checkpoint of a run: ``checkpoints/*.ckpt`` (``last``, ``periodic-<step>``, ``before-divergence``,
    the best) and the ``hpc_ckpt_<n>.ckpt`` that Lightning's SLURM requeue handler writes into the run directory."""
    found = list(run_dir.checkpoints.glob("*.ckpt")) + list(run_dir.path.glob("hpc_ckpt_*.ckpt"))
    return [p for p in found if not p.name.startswith(".")]


def newest_checkpoint(run_dir: RunDir) -> Path | None:
    """The most recently written checkpoint of the run, or None."""
    checkpoints = run_checkpoints(run_dir)
    return max(checkpoints, key=lambda p: p.stat().st_mtime_ns) if checkpoints else None


def _unfinished_runs(stage_dir: Path) -> list[tuple[RunDir, Path]]:
    runs = [RunDir(p) for p in stage_dir.iterdir() if p.is_dir() and not p.is_symlink()] if stage_dir.is_dir() else []
    return [(run, ckpt) for run in runs if run.read().get("status") != "finished" and (ckpt := newest_checkpoint(run))]


def _requeued_run(stage_dir: Path) -> tuple[RunDir, Path] | None:
    """The unfinished run an earlier start of this SLURM job made, when the scheduler requeued the job."""
    job = slurm_job_id()
    if job is None or int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None
    mine = [pair for pair in _unfinished_runs(stage_dir) if pair[0].read().get("slurm_job_id") == job]
    if not mine:
        return None
    return max(mine, key=lambda pair: pair[1].stat().st_mtime_ns)


def resume_target(resume: Any, stage_dir: Path) -> tuple[RunDir, Path] | None:
    """The run and checkpoint ``resume`` names, without opening the checkpoint (no torch needed)."""
    if resume in (False, None, "false", "False"):
        return _requeued_run(stage_dir)
    if resume in (True, "true", "True"):
        candidates = _unfinished_runs(stage_dir)
        if not candidates:
            raise UserError(f"resume=true: no unfinished run with a checkpoint under {stage_dir}; start one without resume")
        return max(candidates, key=lambda pair: pair[1].stat().st_mtime_ns)
    path = Path(str(resume)).expanduser()
    ckpt = newest_checkpoint(RunDir(path)) if path.is_dir() else path
    if ckpt is None or not ckpt.is_file():
        raise UserError(f"resume={resume}: no checkpoint at {path / 'checkpoints' if path.is_dir() else path}; pass a run directory or a .ckpt file")
    run_dir = RunDir(ckpt.parent if ckpt.name.startswith("hpc_ckpt_") else ckpt.parents[1])
    return run_dir, ckpt


def find_resume(resume: Any, stage_dir: Path) -> ResumePoint | None:
    """Resolve ``resume`` (false | true | PATH) to the run and checkpoint to continue, or None for a new run."""
    target = resume_target(resume, stage_dir)
    if target is None:
        return None
    run_dir, ckpt = target
    if resume in (False, None, "false", "False"):  # logged here, not where resume_target is also asked (pipeline.checks)
        log.info("SLURM job %s was requeued (restart %s): continuing %s from %s", slurm_job_id(), os.environ["SLURM_RESTART_COUNT"], run_dir.path, ckpt.name)
    checkpoint = read_checkpoint(ckpt, run_dir)
    try:
        step = int(checkpoint["global_step"])
        shapes = {name: tuple(tensor.shape) for name, tensor in checkpoint["state_dict"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(f"{ckpt} is not a Lightning checkpoint of this pipeline ({one_line(err, 120)}); {_others(ckpt, run_dir)}") from None
    return ResumePoint(run_dir, ckpt, step, shapes)


def read_checkpoint(path: Path, run_dir: RunDir) -> dict[str, Any]:
    """The checkpoint memory-mapped (tensors stay on disk until used), or one line naming the run's other checkpoints."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a truncated zip, random bytes, a pickled object: all mean "not this file"
        raise UserError(f"cannot resume from {path}: it is damaged ({one_line(err, 120)}); {_others(path, run_dir)}") from None


def _others(path: Path, run_dir: RunDir) -> str:
    others = sorted(str(p) for p in run_checkpoints(run_dir) if p.resolve() != path.resolve())
    return f"pass resume= one of the run's other checkpoints: {', '.join(others)}" if others else "the run has no other checkpoint"


def check_fits(point: ResumePoint, model: torch.nn.Module) -> None:
    """Refuse a checkpoint whose weights have other names or shapes than this config's model: a changed
    size preset, tokenizer or data shape. Loading it would fail deep inside Lightning's restore."""
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    differing = sorted(name for name in ours.keys() | point.weight_shapes.keys() if ours.get(name) != point.weight_shapes.get(name))
    if differing:
        name = differing[0]
        raise UserError(
            f"{point.checkpoint} does not fit this config's model: {len(differing)} weights differ (e.g. {name}: "
            f"checkpoint {point.weight_shapes.get(name)}, config {ours.get(name)}); resume with the run's own settings "
            f"({point.run_dir.path / '.hydra' / 'overrides.yaml'})"
        )
