"""`make bench` in quick mode: every benchmark runs, writes its JSON with the machine it ran on, and the summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env

pytestmark = pytest.mark.slow  # compiles DiTs: about a minute and a half on 2 cores


def test_every_benchmark_runs_and_records_where(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "benchmarks.run", "--out-dir", str(tmp_path)], cwd=REPO, env=cli_env(PIPELINE_BENCH_QUICK="1"),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    names = sorted(p.stem.removeprefix("bench_") for p in (REPO / "benchmarks").glob("bench_*.py"))
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == names
    for name in names:
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["quick"] is True and "error" not in record
        assert record["machine"]["torch_version"] and record["machine"]["packages"]["pipeline"]
        assert record["summary"] and all(value is not None for value in record["summary"].values())
    summary = (tmp_path / "summary.md").read_text()
    assert "Quick mode" in summary
    assert all(f"| {name} |" in summary for name in names)
