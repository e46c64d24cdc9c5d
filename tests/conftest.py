"""Shared fixtures: composed configs and one real CLI run of stage one, reused by many tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pipeline.config import config_dir, register_resolvers

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """In-process tests run two at a time on a 2-core machine (pytest-xdist): one intra-op thread each, or the two
    workers' OpenMP threads spin against each other on small ops (a tiny DiT's training went from 9 s to 230 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: offline W&B, no hub, plain progress lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "PIPELINE_"))}
    env.update(WANDB_MODE="offline", HF_HUB_OFFLINE="1", CI="true", WANDB_SILENT="true", **extra)
    return env


def run_cli(*overrides: str, cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *overrides], cwd=cwd, env=cli_env(**env),
        capture_output=True, text=True, timeout=timeout,
    )


def files_and_times(folder: Path) -> dict[Path, int]:
    """Every file under ``folder`` with its modification time: equal before and after means nothing was touched."""
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2, exactly one ``error:`` line holding every fragment, and no traceback; returns the line."""
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert all(fragment in line for fragment in fragments), line
    assert "Traceback" not in result.stderr
    return line


def compose_config(*overrides: str, root: Path | None = None) -> DictConfig:
    """The real conf/ composed with overrides, as the CLI would (run_name fixed: no Hydra runtime here)."""
    register_resolvers()
    paths = [f"paths.root={root}"] if root else []
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return compose(config_name="config", overrides=["run_name=test", *paths, *overrides])


def untrained_tokenizer(folder: Path, *data_overrides: str) -> Path:
    """``folder/tokenizer.pt``: a seeded, untrained ``vqvae=small`` for the data of ``data_overrides``, saved as stage
    one saves it. For stage-two tests that need a tokenizer's shapes, not its quality (a stage-one run costs ~20 s)."""
    from hydra.utils import instantiate

    from pipeline.stages.common import tokenizer_latent_shape
    from pipeline.tokenizer import save_tokenizer

    cfg = compose_config(*data_overrides, root=folder)
    torch.manual_seed(0)
    model = instantiate(cfg.vqvae).eval()
    metadata = {"data": cfg.data.name, "modality": cfg.modality.name, "example_shape": list(cfg.modality.example_shape),
                "latent_shape": tokenizer_latent_shape(cfg, model), "num_classes": cfg.data.num_classes, "size_preset": cfg.vqvae.size}
    folder.mkdir(parents=True, exist_ok=True)
    return save_tokenizer(model, folder / "tokenizer.pt", metadata)


def only_run(root: Path, stage: str = "vqvae") -> Path:
    """The one run directory of ``stage`` under ``root`` (synthetic_image data); fails if there are more."""
    (run_dir,) = [p for p in (root / "outputs" / "synthetic_image" / stage).iterdir() if p.is_dir() and not p.is_symlink()]
    return run_dir


@dataclass
class CliRun:
    result: subprocess.CompletedProcess
    root: Path
    run_dir: Path


@pytest.fixture(scope="session")
def vqvae_cli_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliRun]:
    """`python -m pipeline stage=vqvae data=synthetic_image` for a few steps, W&B offline, in a fresh root."""
    root = tmp_path_factory.mktemp("cli")
    result = run_cli(
        "stage=vqvae", "data=synthetic_image", "debug=fast", f"paths.root={root}",
        "data.synthetic_per_class=20", "data.val_size=20", "data.test_size=20", cwd=root,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = [p for p in (root / "outputs" / "synthetic_image" / "vqvae").iterdir() if p.name != "latest"]
    assert len(runs) == 1, runs
    yield CliRun(result, root, runs[0])


SMALL_SYNTHETIC = ("data=synthetic_image", "data.synthetic_per_class=20", "data.val_size=20", "data.test_size=20")


@pytest.fixture(scope="session")
def dit_cli_run(vqvae_cli_run: CliRun) -> Iterator[CliRun]:
    """`python -m pipeline stage=dit` for a few steps on the latents of ``vqvae_cli_run``'s tokenizer."""
    root = vqvae_cli_run.root
    result = run_cli("stage=dit", "debug=fast", f"paths.root={root}", "stage.grid_steps=2", *SMALL_SYNTHETIC, cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = [p for p in (root / "outputs" / "synthetic_image" / "dit").iterdir() if p.name != "latest"]
    assert len(runs) == 1, runs
    yield CliRun(result, root, runs[0])


def train_on_classes(model: torch.nn.Module, objective, latents_of: Callable[[torch.Tensor], torch.Tensor], steps: int, null_class: int = 3) -> tuple[float, float]:
    """Train ``model`` with ``objective`` on batches of 64 random classes (``latents_of(labels)``), a tenth of
    the labels dropped to ``null_class`` as guidance needs; the first and the last loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        y = torch.randint(0, null_class, (64,))
        loss = objective.loss(model, latents_of(y), torch.where(torch.rand(64) < 0.1, torch.full_like(y, null_class), y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]
