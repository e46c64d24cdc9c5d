"""A real two-process DDP launch on CPU (gloo over loopback), as a user types it, against one process."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import cli_env, only_run, run_cli
from pipeline.diffusion import load_dit
from pipeline.tokenizer import load_tokenizer

SMALL = ("data=synthetic_image", "data.synthetic_per_class=20", "data.val_size=20", "data.test_size=20", "logger=csv", "debug=fast")
DDP = ("strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
STEPS = 10


def _train_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/loss")]
    return [float(row["train/loss"]) for row in sorted(rows, key=lambda row: int(row["step"]))]


def _stage_one(root: Path, *extra: str) -> Path:
    result = run_cli("stage=vqvae", f"paths.root={root}", *SMALL, f"trainer.max_steps={STEPS}", "trainer.log_every_n_steps=1", "data.shuffle=false",
                     *extra, cwd=root, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return only_run(root)  # one run directory per launch, whatever the number of ranks


@pytest.fixture(scope="module")
def single_and_ddp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _stage_one(tmp_path_factory.mktemp("single")), _stage_one(tmp_path_factory.mktemp("ddp"), *DDP)


@pytest.mark.timeout(600)
def test_two_ranks_train_what_one_process_trains(single_and_ddp: tuple[Path, Path]) -> None:
    """Same global batch (32 = 2 x 16), no shuffling: the first 10 losses (the global batch's mean) agree within 1e-3."""
    single, ddp = (_train_losses(run) for run in single_and_ddp)
    assert len(single) == len(ddp) == STEPS
    torch.testing.assert_close(torch.tensor(ddp), torch.tensor(single), rtol=1e-3, atol=0.0)


@pytest.mark.timeout(600)
def test_the_ddp_run_records_one_run_with_identical_codebooks_on_both_ranks(single_and_ddp: tuple[Path, Path]) -> None:
    _, ddp = single_and_ddp
    record = json.loads((ddp / "run.json").read_text())
    assert record["status"] == "finished" and record["step"] == STEPS
    assert record["world_size"] == 2 and record["codebooks_identical_across_ranks"] is True and record["global_batch_size"] == 32
    assert load_tokenizer(ddp / "tokenizer.pt").tokenizer_metadata["step"] == STEPS
    checkpoint = torch.load(ddp / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["global_step"] == STEPS


@pytest.mark.slow  # 40 s more on 2 cores
@pytest.mark.timeout(600)
def test_stage_two_trains_over_two_ranks_on_the_ddp_tokenizer(single_and_ddp: tuple[Path, Path]) -> None:
    root = single_and_ddp[1].parents[3]
    result = run_cli("stage=dit", f"paths.root={root}", *SMALL, *DDP, "trainer.max_steps=6", "stage.grid_steps=2", cwd=root, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = only_run(root, "dit")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["step"] == 6 and record["world_size"] == 2
    assert load_dit(run_dir / "dit.pt").metadata["step"] == 6
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["global_step"] == 6


@pytest.mark.slow  # 30 s on 2 cores
@pytest.mark.timeout(600)
def test_torchrun_starts_the_ranks_and_they_share_one_run(tmp_path: Path) -> None:
    """The README's torchrun command on CPU: torchrun starts both ranks; they agree on one run directory."""
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "pipeline", "stage=vqvae", f"paths.root={tmp_path}", *SMALL, *DDP, "trainer.max_steps=4"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = only_run(tmp_path)
    assert run_dir.name.startswith("torchrun-")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["world_size"] == 2 and record["codebooks_identical_across_ranks"] is True
