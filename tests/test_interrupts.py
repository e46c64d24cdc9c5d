"""SIGTERM and SIGUSR1 during training: a checkpoint, `interrupted` in run.json, one line, and a resume that finishes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import cli_env, only_run, run_cli

RUN = ("stage=vqvae", "data=synthetic_image", "data.synthetic_per_class=20", "data.val_size=20", "data.test_size=20", "logger=csv", "debug=fast")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGUSR1, marks=pytest.mark.slow)], ids=["SIGTERM", "SIGUSR1"])
def test_a_signal_saves_a_checkpoint_and_resume_finishes_the_run(tmp_path: Path, signum: signal.Signals) -> None:
    command = [sys.executable, "-m", "pipeline", *RUN, f"paths.root={tmp_path}", "trainer.max_steps=100000"]
    process = subprocess.Popen(command, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # training is under way, past a validation and its checkpoint
        if line.startswith("step 20/"):
            break
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr[-3000:]

    run_dir = only_run(tmp_path)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == signum.name
    step = record["step"]
    (line,) = [line for line in stderr.splitlines() if line.startswith("interrupted by")]
    assert line.startswith(f"interrupted by {signum.name} at step {step}: checkpoint {run_dir / 'checkpoints' / 'last.ckpt'}; continue with: python -m pipeline ")
    assert line.endswith(f"resume={run_dir}") and "Traceback" not in stderr
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["global_step"] == step >= 20
    assert (run_dir / "metrics.csv").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()  # what was written stays

    resumed = run_cli(*RUN, f"paths.root={tmp_path}", f"resume={run_dir}", f"trainer.max_steps={step + 4}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["step"] == step + 4
