"""`python -m pipeline.compare`: runs the test makes, read back into a table and plots."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import CliRun, cli_env
from pipeline.compare import find_runs, main


def make_run(root: Path, name: str, stage: str, group: str, config: dict, losses: list[float], status: str = "finished") -> Path:
    run_dir = root / "outputs" / "mnist" / stage / name
    run_dir.mkdir(parents=True)
    record = {"stage": stage, "group": group, "status": status, "metrics": {"val/loss": losses[-1], "val/psnr": 20.0 + losses[-1]}}
    (run_dir / "run.json").write_text(json.dumps(record))
    flat = {"run_name": name, "paths.root": str(root), "data.name": "mnist", **config}
    (run_dir / "hparams.yaml").write_text(yaml.safe_dump(flat))
    with (run_dir / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "step", "train/loss", "val/loss"])
        writer.writeheader()
        for index, loss in enumerate(losses):
            writer.writerow({"epoch": 0, "step": 10 * index, "train/loss": loss + 0.1, "val/loss": ""})
            writer.writerow({"epoch": 0, "step": 10 * index, "train/loss": "", "val/loss": loss})
    return run_dir


@pytest.fixture()
def two_runs(tmp_path: Path) -> Path:
    make_run(tmp_path, "small", "dit", "sizes", {"dit.preset": "XS", "dit.depth": 6, "seed": 1}, [1.0, 0.6, 0.7])
    make_run(tmp_path, "big", "dit", "sizes", {"dit.preset": "S", "dit.depth": 12, "seed": 1}, [0.9, 0.5, 0.4])
    make_run(tmp_path, "broken", "dit", "sizes", {"dit.preset": "B", "dit.depth": 12, "seed": 1}, [2.0], status="failed")
    make_run(tmp_path, "other", "dit", "elsewhere", {"dit.preset": "L", "dit.depth": 24, "seed": 2}, [0.3])
    return tmp_path


def test_table_shows_what_differs_and_the_best_values(two_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = two_runs / "plots"
    assert main([str(two_runs / "outputs"), "--group", "sizes", "--metric", "val/loss", "--out", str(out_dir)]) == 0
    text = capsys.readouterr().out
    assert "stage=dit: 2 runs" in text and "broken" not in text and "other" not in text
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]] for line in text.splitlines() if line.count("│") > 3}
    assert rows["dit.preset"] == ["S", "XS"] and rows["dit.depth"] == ["12", "6"]  # oldest first; equal times: by name
    assert "seed" not in rows and "run_name" not in rows and "paths.root" not in rows  # the same everywhere, or per launch
    assert rows["best val/loss"] == ["0.4", "0.6"] and rows["val/psnr"] == ["20.4", "20.7"]


def test_plots_one_png_per_metric(two_runs: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plots extra (make compare and make test-all install it)")
    out_dir = two_runs / "plots"
    assert main([str(two_runs / "outputs"), "--metric", "val/loss", "--metric", "train/loss", "--out", str(out_dir)]) == 0
    for name in ("val_loss", "train_loss"):
        image = Image.open(out_dir / f"{name}.png")
        assert image.format == "PNG" and image.size[0] > 500


def test_without_matplotlib_the_table_comes_with_a_note(two_runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "matplotlib" else real_find_spec(name, *args))
    out_dir = two_runs / "plots"
    assert main([str(two_runs / "outputs"), "--metric", "val/loss", "--out", str(out_dir)]) == 0
    text = capsys.readouterr().out
    assert "best val/loss" in text and "plots skipped: matplotlib is not installed (pip install 'pipeline[plots]'" in text
    assert not out_dir.exists()


def test_filters_and_unfinished_runs(two_runs: Path) -> None:
    assert {run.name for run in find_runs([two_runs / "outputs"])} == {"small", "big", "other"}
    assert {run.name for run in find_runs([two_runs / "outputs"], unfinished=True)} == {"small", "big", "other", "broken"}
    assert {run.name for run in find_runs([two_runs / "outputs"], group="elsewhere")} == {"other"}
    assert find_runs([two_runs / "outputs"], stage="vqvae") == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["--metric", "val/fid"], "error: no run logged val/fid; logged: train/loss, val/loss"),
     (["--group", "nope"], "error: no finished runs under"),
     (["/nonexistent/outputs"], "error: no such path: /nonexistent/outputs")],
)
def test_bad_arguments_exit_2_with_one_line(two_runs: Path, args: list[str], expected: str) -> None:
    paths = [] if args[0].startswith("/") else [str(two_runs / "outputs")]
    result = subprocess.run([sys.executable, "-m", "pipeline.compare", *paths, *args, "--out", str(two_runs / "plots")],
                            env=cli_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(expected)


def test_reads_a_real_stage_one_run(vqvae_cli_run: CliRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(vqvae_cli_run.run_dir), "--metric", "val/psnr", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if "best val/psnr" in line]
    psnr = [float(row["val/psnr"]) for row in csv.DictReader((vqvae_cli_run.run_dir / "metrics.csv").open()) if row.get("val/psnr")]
    assert vqvae_cli_run.run_dir.name[:10] in text and rows and f"{max(psnr):.4g}" in rows[0]
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "val_psnr.png").is_file()
