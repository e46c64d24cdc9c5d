"""Compare runs without W&B: ``python -m pipeline.compare [PATH ...] [--metric NAME ...] [--group G] [--stage S]``.

Reads each run's ``run.json`` (stage, group, status, final metrics), its flat config
(``hparams.yaml``, written with ``metrics.csv`` by both loggers) and ``metrics.csv``. Prints, per
stage, a table of the config values that differ between the runs and their final metrics (with
the best value over training of each ``--metric``), and, with the ``plots`` extra (matplotlib), writes
one PNG per metric with one line per run (``--out``, default ``outputs/compare``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.rundir import RUN_FILE
from pipeline.metric_goals import metric_summary

# Keys that differ between any two launches without saying anything about the recipe.
PER_LAUNCH = ("run_name", "resume", "group", "experiment_name", "paths.", "data.data_dir", "logger.", "tags", "tokenizer_ckpt", "dit_ckpt")


@dataclass
class Run:
    """One run directory, read back."""

    path: Path
    record: dict[str, Any]
    config: dict[str, Any]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def stage(self) -> str:
        return str(self.record.get("stage", "?"))

    def best(self, metric: str) -> float | None:
        """The best value of ``metric`` over training (min or max by :func:`metric_summary`), else its final value."""
        values = [value for _, value in self.curves.get(metric, [])]
        goal = metric_summary(metric)
        if values and goal.startswith(("min", "max")):
            return min(values) if goal.startswith("min") else max(values)
        final = self.record.get("metrics", {}).get(metric)
        return float(final) if final is not None else (values[-1] if values else None)


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``metrics.csv`` as ``{metric: [(step, value), ...]}`` (empty cells skipped)."""
    if not path.is_file():
        return {}
    curves: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    curves.setdefault(key, []).append((step, float(value)))
    return curves


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "hparams.yaml"
    try:
        loaded = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def find_runs(paths: Iterable[Path], group: str | None = None, stage: str | None = None, unfinished: bool = False) -> list[Run]:
    """The runs under ``paths`` (run directories or folders above them), newest last; ``latest`` links skipped."""
    runs: dict[Path, Run] = {}
    for root in paths:
        candidates = [root / RUN_FILE] if (root / RUN_FILE).is_file() else sorted(root.rglob(RUN_FILE)) if root.is_dir() else []
        for record_path in candidates:
            run_dir = record_path.parent
            if run_dir.is_symlink() or "latest" in run_dir.relative_to(root).parts or run_dir.resolve() in runs:
                continue
            try:
                record = json.loads(record_path.read_text())
            except (OSError, ValueError):
                continue
            if (not unfinished and record.get("status") != "finished") or (group and record.get("group") != group) or (stage and record.get("stage") != stage):
                continue
            runs[run_dir.resolve()] = Run(run_dir, record, read_config(run_dir), read_curves(run_dir / "metrics.csv"))
    return sorted(runs.values(), key=lambda run: (run.stage, str(run.record.get("updated", "")), run.name))


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys whose values are not the same in every run (per-launch keys left out)."""
    keys = sorted({key for run in runs for key in run.config if not key.startswith(PER_LAUNCH)})
    return [key for key in keys if len({json.dumps(run.config.get(key), sort_keys=True, default=str) for run in runs}) > 1]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def tables(runs: Sequence[Run], metrics: Sequence[str]) -> list[Any]:
    """One rich table per stage, a column per run (as W&B's run comparer): the config values that
    differ, the final metrics a comparison ranks by (those with a min or max goal), and the best
    value over training of each of ``metrics``."""
    from rich.table import Table

    out = []
    for stage in sorted({run.stage for run in runs}):
        members = [run for run in runs if run.stage == stage]
        finals = sorted({key for run in members for key in run.record.get("metrics", {}) if metric_summary(key) != "last"} - set(metrics))
        table = Table(title=f"stage={stage}: {len(members)} run{'s' if len(members) > 1 else ''}", title_justify="left")
        table.add_column("", style="bold")
        for run in members:
            table.add_column(run.name, overflow="fold")
        table.add_row("group", *(_format(run.record.get("group")) for run in members), end_section=True)
        for key in differing_keys(members):
            table.add_row(key, *(_format(run.config.get(key)) for run in members))
        table.add_section()
        for key in finals:
            table.add_row(key, *(_format(run.record.get("metrics", {}).get(key)) for run in members))
        for metric in metrics:
            table.add_row(f"best {metric}", *(_format(run.best(metric)) for run in members))
        out.append(table)
    return out


def plot(runs: Sequence[Run], metric: str, out_dir: Path) -> Path | None:
    """``<out_dir>/<metric>.png``: ``metric`` over steps, one line per run that logged it; None if none did."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_metric = [run for run in runs if run.curves.get(metric)]
    if not with_metric:
        return None
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    for run in with_metric:
        steps, values = zip(*run.curves[metric])
        axes.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=f"{run.record.get('stage', '?')}/{run.name}")
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{metric.replace('/', '_')}.png"
    figure.savefig(path)
    plt.close(figure)
    return path


def default_metrics(runs: Sequence[Run]) -> list[str]:
    """Each stage's training objective on the validation split: what a comparison looks at first."""
    logged = {key for run in runs for key in run.curves}
    return [name for name in ("val/rec_loss", "val/loss") if name in logged]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("outputs")], help="run directories or folders above them (default: outputs)")
    parser.add_argument("--metric", action="append", default=[], help="a metric to plot and rank by its best value (repeatable; default: val/rec_loss, val/loss)")
    parser.add_argument("--group", help="only runs of this group (the W&B group: experiment name, sweep or data name)")
    parser.add_argument("--stage", help="only runs of this stage (vqvae, dit, sample, eval)")
    parser.add_argument("--unfinished", action="store_true", help="include running, interrupted and failed runs")
    parser.add_argument("--out", type=Path, default=Path("outputs") / "compare", help="where the PNG plots go (default: outputs/compare)")
    args = parser.parse_args(argv)

    from rich.console import Console

    console = Console()
    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:
        print(f"error: no such path: {', '.join(missing)}", file=sys.stderr)
        return 2
    runs = find_runs(args.paths, args.group, args.stage, args.unfinished)
    if not runs:
        filters = ", ".join(f"{k}={v}" for k, v in (("group", args.group), ("stage", args.stage)) if v)
        print(f"error: no finished runs under {', '.join(map(str, args.paths))}{f' with {filters}' if filters else ''}", file=sys.stderr)
        return 2
    logged = sorted({key for run in runs for key in run.curves})
    unknown = [metric for metric in args.metric if metric not in logged]
    if unknown:
        print(f"error: no run logged {', '.join(unknown)}; logged: {', '.join(logged)}", file=sys.stderr)
        return 2
    metrics = args.metric or default_metrics(runs)
    for table in tables(runs, metrics):
        console.print(table)
    if importlib.util.find_spec("matplotlib") is None:
        console.print("plots skipped: matplotlib is not installed (pip install 'pipeline[plots]'; make compare installs it)", markup=False)
        return 0
    for metric in metrics:
        path = plot(runs, metric, args.out)
        if path is not None:
            console.print(f"{metric}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
