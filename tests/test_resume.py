"""Resuming: the same W&B run and CSV, a SLURM job the scheduler requeued, and the checkpoints a resume refuses."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import SMALL_SYNTHETIC, CliRun, assert_one_error_line, cli_env, files_and_times, run_cli

SMALL = (*SMALL_SYNTHETIC, "debug=fast")


def runs(root: Path, stage: str = "vqvae") -> list[Path]:
    """Run directories with a ``run.json`` (a resume launch's own folder holds only ``.hydra/`` and its log)."""
    folder = root / "outputs" / "synthetic_image" / stage
    return sorted(p for p in folder.iterdir() if not p.is_symlink() and (p / "run.json").is_file())


def test_resume_continues_the_same_wandb_run_and_metrics_csv(finished_run: Path) -> None:
    """The run was made in another folder (``finished_run`` is a copy): it still continues ``last.ckpt``."""
    root = finished_run.parents[3]
    result = run_cli(f"paths.root={root}", *SMALL, "trainer.max_steps=30", f"resume={finished_run}", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]

    assert runs(root) == [finished_run]
    record = json.loads((finished_run / "run.json").read_text())
    assert record["status"] == "finished" and record["step"] == 30 and record["resumed_from"] == str(finished_run / "checkpoints" / "last.ckpt")
    assert torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["global_step"] == 30
    assert not list((finished_run / "checkpoints").glob("*-v1.ckpt"))
    offline_runs = sorted((finished_run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2  # one per launch, both in the run's folder, to be synced into one W&B run
    assert {p.name.rsplit("-", 1)[1] for p in offline_runs} == {record["wandb_id"]}
    steps = [int(row["step"]) for row in csv.DictReader((finished_run / "metrics.csv").open()) if row.get("train/loss")]
    assert steps == [4, 9, 14, 19, 24, 29]  # every 5 steps, before and after the resume, none twice


@pytest.mark.slow  # 45 s: two launches and two signals
def test_a_requeued_slurm_job_continues_its_run(tmp_path: Path) -> None:
    """SIGUSR1 is Lightning's under SLURM: it saves ``hpc_ckpt_1.ckpt`` and calls ``scontrol requeue``; the
    SIGTERM that ends the job saves ``last.ckpt``; the requeued job (SLURM_RESTART_COUNT=1) continues that run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.calls'}\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
             "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "pipeline", f"paths.root={tmp_path}", *SMALL, "logger=csv", "trainer.max_steps=100000"]
    process = subprocess.Popen(command, cwd=tmp_path, env=cli_env(**slurm), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("step 10/"):
            break
    process.send_signal(signal.SIGUSR1)
    for line in process.stdout:  # Lightning's handler runs between two steps; the job goes on until SLURM stops it
        if (tmp_path / "scontrol.calls").is_file():
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert (tmp_path / "scontrol.calls").read_text().split() == ["requeue", "4242"]
    (run_dir,) = runs(tmp_path)
    assert (run_dir / "hpc_ckpt_1.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted" and record["slurm_job_id"] == "4242"

    requeued = run_cli(*command[3:-1], f"trainer.max_steps={record['step'] + 5}", cwd=tmp_path, **slurm, SLURM_RESTART_COUNT="1")
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert runs(tmp_path) == [run_dir]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert "SLURM job 4242 was requeued (restart 1): continuing" in requeued.stderr + (requeued.stdout or "")


@pytest.fixture()
def finished_run(vqvae_cli_run: CliRun, tmp_path: Path) -> Path:
    """A copy of the session's finished stage-one run, to damage and resume."""
    root = tmp_path / "root"
    target = root / "outputs" / "synthetic_image" / "vqvae" / vqvae_cli_run.run_dir.name
    shutil.copytree(vqvae_cli_run.run_dir, target, symlinks=True)
    return target


def test_a_damaged_checkpoint_exits_2_naming_the_others(finished_run: Path) -> None:
    damaged = finished_run / "checkpoints" / "last.ckpt"
    damaged.write_bytes(damaged.read_bytes()[:4000])
    before = files_and_times(finished_run)
    result = run_cli(f"paths.root={finished_run.parents[3]}", *SMALL, f"resume={damaged}", "logger=none", cwd=finished_run.parents[3])
    line = assert_one_error_line(result, f"cannot resume from {damaged}: it is damaged", "pass resume= one of the run's other checkpoints: ")
    assert str(finished_run / "checkpoints") in line.split("other checkpoints: ")[1]
    assert files_and_times(finished_run) == before


def test_a_checkpoint_of_another_model_size_exits_2(finished_run: Path) -> None:
    before = files_and_times(finished_run)
    result = run_cli(f"paths.root={finished_run.parents[3]}", *SMALL, "vqvae=base", f"resume={finished_run}", "logger=none", cwd=finished_run.parents[3])
    assert_one_error_line(result, "does not fit this config's model", "weights differ", str(finished_run / ".hydra" / "overrides.yaml"))
    assert files_and_times(finished_run) == before


def test_a_file_that_is_not_a_lightning_checkpoint_exits_2(finished_run: Path) -> None:
    foreign = finished_run / "checkpoints" / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    result = run_cli(f"paths.root={finished_run.parents[3]}", *SMALL, f"resume={foreign}", "logger=none", cwd=finished_run.parents[3])
    assert_one_error_line(result, f"{foreign} is not a Lightning checkpoint of this pipeline")


def _limit_file_size(limit: int) -> None:
    """In the child: writes past ``limit`` bytes fail with EFBIG (SIGXFSZ ignored), as a full disk fails them with ENOSPC."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_no_room_for_a_checkpoint_exits_2_and_keeps_the_last_one(finished_run: Path) -> None:
    root = finished_run.parents[3]
    last = finished_run / "checkpoints" / "last.ckpt"
    content = last.read_bytes()
    assert len(content) > 1_000_000
    before = {p: t for p, t in files_and_times(finished_run).items() if p.suffix in (".ckpt", ".pt", ".png") or p.parent.name == ".hydra"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", f"paths.root={root}", *SMALL, "logger=csv", "trainer.max_steps=21", "checkpoint_every_n_steps=1", f"resume={finished_run}"],
        cwd=root, env=cli_env(), capture_output=True, text=True, timeout=300, preexec_fn=lambda: _limit_file_size(1_000_000),
    )
    line = assert_one_error_line(result, f"cannot write {finished_run / 'checkpoints'}", "files written before are unchanged", "resume=true")
    assert "File too large" in line
    assert last.read_bytes() == content
    assert not [p for p in finished_run.rglob(".*.tmp")]
    assert {p: t for p, t in files_and_times(finished_run).items() if p in before} == before
    record = json.loads((finished_run / "run.json").read_text())
    assert record["status"] == "failed" and "NoSpace" in record["error"]
