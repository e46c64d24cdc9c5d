"""Run every ``benchmarks/bench_*.py`` and record the results (``make bench``).

Each benchmark module exposes ``main(out_dir: Path) -> dict`` returning ``{"config": ..., "results": ...,
"summary": {...}}``; ``summary`` holds the headline numbers shown in the markdown table. The runner
writes ``outputs/bench/<name>.json`` per benchmark (machine info + what ``main`` returned) and
``outputs/bench/summary.md``. Usage: ``python -m benchmarks.run [NAME ...] [--out-dir DIR]``;
``PIPELINE_BENCH_QUICK=1`` runs those that read it at toy sizes, to check that they work.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PACKAGES = ("pipeline", "torch", "numpy", "torchmetrics", "lightning", "vector-quantize-pytorch", "einops", "diffusers")
# PIPELINE_BENCH_QUICK=1: benchmarks that read it shrink to a seconds-long smoke test; the numbers mean nothing.
QUICK = os.environ.get("PIPELINE_BENCH_QUICK") == "1"


def machine_info() -> dict[str, Any]:
    """Where the numbers were taken: platform, CPUs, load, torch build and threads, package versions."""
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda_available": torch.cuda.is_available(),
        "packages": versions,
    }


def discover(names: list[str]) -> list[Path]:
    """``bench_*.py`` files in this folder, sorted; only those named (with or without ``bench_``) if any."""
    files = sorted(BENCH_DIR.glob("bench_*.py"))
    if not names:
        return files
    wanted = {name.removeprefix("bench_").removesuffix(".py") for name in names}
    chosen = [f for f in files if f.stem.removeprefix("bench_") in wanted]
    missing = wanted - {f.stem.removeprefix("bench_") for f in chosen}
    if missing:
        raise SystemExit(f"no benchmark named {sorted(missing)}; have {[f.stem for f in files]}")
    return chosen


def load(path: Path) -> ModuleType:
    """The benchmark module of a ``benchmarks/bench_*.py`` file (its import may fail: the caller records that)."""
    return importlib.import_module(f"benchmarks.{path.stem}")


def _cell(value: Any) -> str:
    """A summary value as a markdown table cell."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_markdown(records: list[dict[str, Any]]) -> str:
    """One table over all benchmarks: a row per headline number, plus the machine it ran on."""
    lines = ["# Benchmarks", ""]
    if records:
        machine = records[0]["machine"]
        lines += [
            f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, torch {machine['torch_version']} "
            f"({machine['torch_threads']} threads), load average at start {machine['load_average']}.",
            "",
        ]
    if QUICK:
        lines += ["**Quick mode (PIPELINE_BENCH_QUICK=1): benchmarks that read it ran at toy sizes; their numbers are meaningless.**", ""]
    lines += ["| benchmark | metric | value |", "|---|---|---|"]
    for record in records:
        if "error" in record:
            lines.append(f"| {record['benchmark']} | error | {record['error'].splitlines()[-1]} |")
        for metric, value in record.get("summary", {}).items():
            lines.append(f"| {record['benchmark']} | {metric} | {_cell(value)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; returns 1 if any of them raised."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "outputs" / "bench")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    records = []
    for path in discover(args.names):
        name = path.stem.removeprefix("bench_")
        print(f"[bench] {name} ...", flush=True)
        record: dict[str, Any] = {
            "benchmark": name,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "quick": QUICK,
        }
        start = time.perf_counter()
        try:
            record.update(load(path).main(args.out_dir))
        except Exception:  # one broken benchmark must not hide the others' numbers
            record["error"] = traceback.format_exc()
            print(record["error"], file=sys.stderr)
        record["duration_s"] = round(time.perf_counter() - start, 2)
        (args.out_dir / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        for metric, value in record.get("summary", {}).items():
            print(f"  {metric}: {_cell(value)}")
        records.append(record)

    (args.out_dir / "summary.md").write_text(summary_markdown(records))
    print(f"[bench] wrote {args.out_dir}/summary.md")
    return int(any("error" in r for r in records))


if __name__ == "__main__":
    sys.exit(main())
