"""Declare W&B lineage for runs that logged offline: ``python -m pipeline.lineage [PATH ...]``.

Offline, W&B cannot resolve an artifact reference, so stage two, sampling and evaluation only
record what they read (``run.json`` ``inputs``, the run config's ``lineage/<kind>``). After
``wandb sync`` has uploaded the runs, this command declares each recorded input on the synced
run through the public API (``Run.use_artifact``), and W&B's lineage graph then shows which
tokenizer every DiT and every score came from. Runs already declared (``lineage_declared`` in
``run.json``) are skipped, so it can run after every sync.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.rundir import RUN_FILE, RunDir


@dataclass(frozen=True)
class PendingRun:
    """A finished W&B run with inputs that W&B has not been told about yet."""

    run_dir: RunDir
    wandb_id: str
    project: str
    entity: str | None
    inputs: dict[str, str]


def pending_runs(roots: Iterable[Path]) -> list[PendingRun]:
    """Every finished run under ``roots`` that logged to W&B, has inputs, and has not had them declared."""
    found = []
    for root in roots:
        for record_path in sorted(root.rglob(RUN_FILE)) if root.is_dir() else []:
            if record_path.parent.is_symlink() or any(part == "latest" for part in record_path.parts):
                continue
            record: dict[str, Any] = json.loads(record_path.read_text())
            if record.get("status") == "finished" and record.get("wandb_id") and record.get("inputs") and not record.get("lineage_declared"):
                found.append(PendingRun(RunDir(record_path.parent), record["wandb_id"], record.get("wandb_project") or "pipeline",
                                        record.get("wandb_entity"), dict(record["inputs"])))
    return found


def declare(api: Any, run: PendingRun) -> list[str]:
    """Declare ``run``'s inputs on its synced W&B run; returns the artifact names declared."""
    entity = run.entity or api.default_entity
    synced = api.run(f"{entity}/{run.project}/{run.wandb_id}")
    declared = []
    for reference in run.inputs.values():
        name = f"{entity}/{run.project}/{reference}"
        synced.use_artifact(api.artifact(name, type="model"))
        declared.append(name)
    run.run_dir.update(lineage_declared=True)
    return declared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.lineage", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("outputs")], help="run directories or folders above them (default: outputs)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be declared, contact nobody")
    args = parser.parse_args(argv)
    runs = pending_runs(args.paths)
    if not runs:
        print("no finished W&B runs with undeclared inputs")
        return 0
    if args.dry_run:
        for run in runs:
            print(f"{run.run_dir.path}: {run.wandb_id} <- {', '.join(run.inputs.values())}")
        return 0
    import wandb

    api = wandb.Api()
    for run in runs:
        try:
            declared = declare(api, run)
        except (wandb.errors.CommError, ValueError) as err:
            print(f"error: {run.run_dir.path} (W&B run {run.wandb_id}): {err}; run `wandb sync` on it and on the runs that made its inputs first", file=sys.stderr)
            return 2
        print(f"{run.run_dir.path}: declared {', '.join(declared)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
