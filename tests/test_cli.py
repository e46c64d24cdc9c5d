"""The real CLI in a subprocess: a stage-one run, its files, Hydra's own flags, and every clear-error case."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import CliRun, run_cli
from pipeline.tokenizer import VQVAE, load_tokenizer


def test_stage_one_run_finishes_and_says_where_things_are(vqvae_cli_run: CliRun) -> None:
    out = vqvae_cli_run.result.stdout
    for key in ("checkpoint", "tokenizer", "reconstruction_grid", "wandb_run", "val/psnr", "wandb sync"):
        assert key in out, out[-2000:]
    assert "using generated source" in vqvae_cli_run.result.stderr + out


def test_run_directory_layout(vqvae_cli_run: CliRun) -> None:
    run_dir = vqvae_cli_run.run_dir
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    grids = sorted((run_dir / "samples").glob("recon_step*.png"))
    assert grids and grids[-1].stat().st_size > 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["stage"] == "vqvae" and record["data"] == "synthetic_image"
    assert {"val/psnr", "val/ssim", "val/codebook_usage", "val/perplexity", "test/psnr"} <= set(record["metrics"])
    latest = run_dir.parent / "latest"
    assert latest.is_symlink() and latest.resolve() == run_dir.resolve()


def test_tokenizer_file_loads_with_weights_only(vqvae_cli_run: CliRun) -> None:
    path = vqvae_cli_run.run_dir / "tokenizer.pt"
    payload = torch.load(path, weights_only=True)
    assert payload["metadata"]["latent_shape"] == [8, 7, 7]
    model = load_tokenizer(path)
    assert isinstance(model, VQVAE) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    z_e = model.encode(x)
    assert z_e.shape == (2, 8, 7, 7)
    quantized = model.quantize(z_e)
    assert quantized.indices.shape == (2, 7, 7)
    assert torch.allclose(model.decode_indices(quantized.indices), model.decode(quantized.quantized), atol=1e-5)


def test_metrics_csv_has_validation_metrics(vqvae_cli_run: CliRun) -> None:
    with open(vqvae_cli_run.run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0])
    assert {"train/loss", "val/rec_loss", "val/psnr", "val/ssim", "val/codebook_usage", "val/perplexity"} <= columns
    psnr = [float(r["val/psnr"]) for r in rows if r["val/psnr"]]
    assert psnr and all(p > 0 for p in psnr)


def test_help_and_cfg_job(tmp_path: Path) -> None:
    helped = run_cli("--help", cwd=tmp_path)
    assert helped.returncode == 0 and "== Configuration groups ==" in helped.stdout and "stage=vqvae data=mnist" in helped.stdout and "vqvae: base, large, small" in helped.stdout
    shown = run_cli("--cfg", "job", "stage=vqvae", "data=fashion_mnist", cwd=tmp_path)
    assert shown.returncode == 0 and "name: fashion_mnist" in shown.stdout and "name: vqvae" in shown.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data=mnsit"], "unknown data option 'mnsit'; valid: cifar10, fashion_mnist, folder, fortunes, mnist, paired, paired_table, spoken_digits, synthetic_audio, synthetic_image, synthetic_text, text_file, tinystories"),
        (["data=spoken_digits", "modality=image"], "data=spoken_digits is audio data but modality=image; drop the modality= override"),
        (["data=synthetic_text", "modality=audio"], "data=synthetic_text is text data but modality=audio"),
        (["stage=sample", "data=spoken_digits", "modality=image"], "data=spoken_digits is audio data but modality=image"),
        (["stage=eval", "data=mnist", "modality=audio"], "data=mnist is image data but modality=audio"),
        (["data=text_file"], "data=text_file needs data.path=FILE (a UTF-8 text file)"),
        (["vqvae=huge"], "unknown vqvae option 'huge'; valid: base, large, small"),
        (["stage=vqvae", "data=folder"], "data=folder needs data.path=DIR"),
        (["data=folder", "data.path=/nonexistent/images"], "data.path /nonexistent/images does not exist"),
        (["data=synthetic_image", "data.size=30"], "data=synthetic_image examples of length [30, 30] come back from the tokenizer as [28, 28]"),
        pytest.param(["data=synthetic_audio", "data.clip_length=1000"], "make them divisible by its downsampling x16", marks=pytest.mark.slow),  # the image case's path
        (["data=synthetic_image", "data.synthetic_per_class=2", "data.val_size=5", "data.test_size=5"], "data=synthetic_image has 10 training examples, fewer than one batch (data.batch_size=32)"),
        (["data=synthetic_image", "resume=/nonexistent/run"], "resume=/nonexistent/run: no checkpoint"),
        (["data=synthetic_image", "resume=true"], "resume=true: no unfinished run"),
        (["data=cifar10", "data.hub_timeout=1"], "no source for data 'cifar10' worked"),
        (["stage.name=train"], "stage=train is not available; valid: vqvae, dit, ar, sample, eval"),
        (["trainer.max_stepz=3"], "bad config"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path: Path, overrides: list[str], expected: str) -> None:
    result = run_cli(f"paths.root={tmp_path}", *overrides, "logger=none", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and expected in error_lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_failed_run_keeps_what_was_written(vqvae_cli_run: CliRun, tmp_path: Path) -> None:
    """A bad resume path leaves the finished run, its checkpoint and `latest` untouched."""
    before = {p: p.stat().st_mtime for p in vqvae_cli_run.run_dir.rglob("*") if p.is_file()}
    result = run_cli(f"paths.root={vqvae_cli_run.root}", "data=synthetic_image", "resume=/nope", "logger=none", cwd=tmp_path)
    assert result.returncode == 2
    after = {p: p.stat().st_mtime for p in vqvae_cli_run.run_dir.rglob("*") if p.is_file()}
    assert before == after


def test_multirun_jobs_get_their_own_run_dirs(tmp_path: Path) -> None:
    result = run_cli(
        "--multirun", f"paths.root={tmp_path}", "data=synthetic_image", "debug=fast", "logger=csv",
        "data.synthetic_per_class=10", "data.val_size=10", "data.test_size=10", "trainer.max_steps=2,3", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    stage_dir = tmp_path / "outputs" / "synthetic_image" / "vqvae"
    runs = sorted(p for p in stage_dir.iterdir() if p.is_dir() and not p.is_symlink() and (p / "run.json").is_file())
    assert [p.name[-2:] for p in runs] == ["_0", "_1"]
    assert runs[0].name[:-2] == runs[1].name[:-2]  # one launch stamp for the sweep
    records = [json.loads((p / "run.json").read_text()) for p in runs]
    assert [record["step"] for record in records] == [2, 3]
    assert {record["group"] for record in records} == {f"synthetic_image-sweep-{runs[0].name[:-2]}"}  # one W&B group per sweep
