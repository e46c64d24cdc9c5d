"""SIGKILL mid-training, then `resume=`: the run ends where an uninterrupted one ends, with the same model."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import CliRun, cli_env, only_run, run_cli
from pipeline.diffusion import load_dit
from pipeline.tokenizer import load_tokenizer

STEPS = 24  # 5 batches per epoch (160 train examples): the kill lands mid-epoch and the run crosses epochs
RUN = (
    "stage=vqvae", "data=synthetic_image", "data.synthetic_per_class=20", "data.val_size=20", "data.test_size=20", "logger=csv", "debug=fast",
    f"trainer.max_steps={STEPS}", "trainer.val_check_interval=12", "checkpoint_every_n_steps=3", "trainer.deterministic=true",
)


def _kill_after_second_checkpoint(root: Path, run: tuple[str, ...] = RUN, stage: str = "vqvae") -> Path:
    process = subprocess.Popen([sys.executable, "-m", "pipeline", *run, f"paths.root={root}"], cwd=root, env=cli_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if list(root.glob(f"outputs/synthetic_image/{stage}/*/checkpoints/periodic-6.ckpt")):  # the second one (steps 3, 6)
            break
        time.sleep(0.02)
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    run_dir = only_run(root, stage)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # killed: nothing got to say otherwise
    return run_dir


@pytest.mark.timeout(600)
def test_a_killed_run_resumes_to_the_model_an_uninterrupted_run_ends_with(tmp_path: Path) -> None:
    straight = run_cli(*RUN, f"paths.root={tmp_path / 'straight'}", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    (tmp_path / "killed").mkdir()
    killed_dir = _kill_after_second_checkpoint(tmp_path / "killed")
    resumed = run_cli(*RUN, f"paths.root={tmp_path / 'killed'}", f"resume={killed_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    runs = {"straight": only_run(tmp_path / "straight"), "resumed": killed_dir}
    records = {name: json.loads((run / "run.json").read_text()) for name, run in runs.items()}
    assert records["resumed"]["status"] == "finished" and records["resumed"]["resumed_from"].startswith(str(killed_dir / "checkpoints"))
    assert records["resumed"]["step"] == records["straight"]["step"] == STEPS
    checkpoints = {name: torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu") for name, run in runs.items()}
    optimizer_steps = {name: {int(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()} for name, ckpt in checkpoints.items()}
    assert optimizer_steps["resumed"] == optimizer_steps["straight"] == {STEPS}
    models = {name: load_tokenizer(run / "tokenizer.pt").state_dict() for name, run in runs.items()}
    assert models["resumed"].keys() == models["straight"].keys()
    for key, value in models["straight"].items():
        torch.testing.assert_close(models["resumed"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert_same_metric_rows(runs["resumed"] / "metrics.csv", runs["straight"] / "metrics.csv")


def assert_same_metric_rows(resumed: Path, straight: Path) -> None:
    """One unbroken ``metrics.csv``: the rows before the checkpoint kept, those the killed run logged after it
    dropped and logged again, so the resumed file has the uninterrupted run's rows and values."""
    rows = {name: list(csv.DictReader(path.open())) for name, path in (("resumed", resumed), ("straight", straight))}
    keys = {name: [(row["step"], sorted(k for k, v in row.items() if v)) for row in table] for name, table in rows.items()}
    assert keys["resumed"] == keys["straight"]
    for got, want in zip(rows["resumed"], rows["straight"]):
        values = {k: float(v) for k, v in want.items() if v and k != "step" and not k.startswith("perf/")}  # perf/: wall-clock
        assert {k: float(got[k]) for k in values} == pytest.approx(values, rel=1e-4, abs=1e-6), want["step"]


@pytest.mark.slow  # a minute and a half on 2 cores
@pytest.mark.timeout(600)
def test_a_killed_dit_run_resumes_to_the_model_an_uninterrupted_run_ends_with(tmp_path: Path, vqvae_cli_run: CliRun) -> None:
    """Stage two draws noise, times and label dropout, and keeps an EMA: the checkpoint carries both."""
    run = ("stage=dit", *RUN[1:], "stage.grid_steps=1", f"tokenizer_ckpt={vqvae_cli_run.run_dir / 'tokenizer.pt'}")
    straight = run_cli(*run, f"paths.root={tmp_path / 'straight'}", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    (tmp_path / "killed").mkdir()
    killed_dir = _kill_after_second_checkpoint(tmp_path / "killed", run, "dit")
    resumed = run_cli(*run, f"paths.root={tmp_path / 'killed'}", f"resume={killed_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((killed_dir / "run.json").read_text())["step"] == STEPS
    straight_dir = only_run(tmp_path / "straight", "dit")
    models = {name: load_dit(run_dir / "dit.pt").model.state_dict() for name, run_dir in (("straight", straight_dir), ("resumed", killed_dir))}
    for key, value in models["straight"].items():
        torch.testing.assert_close(models["resumed"][key], value, rtol=1e-5, atol=1e-6, msg=key)
