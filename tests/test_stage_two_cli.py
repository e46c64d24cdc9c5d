"""Stage two, sampling and evaluation through the real CLI, on the tokenizer the stage-one fixture trained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SMALL_SYNTHETIC, CliRun, assert_one_error_line, files_and_times, only_run, run_cli, untrained_tokenizer
from pipeline.diffusion import file_digest, load_dit
from pipeline.lineage import declare, main, pending_runs
from wandb_records import items, merged, run_log


def test_stage_two_trains_on_the_latest_tokenizer(dit_cli_run: CliRun, vqvae_cli_run: CliRun) -> None:
    record = json.loads((dit_cli_run.run_dir / "run.json").read_text())
    tokenizer = vqvae_cli_run.run_dir / "tokenizer.pt"
    assert record["status"] == "finished" and record["stage"] == "dit" and record["step"] == 20
    assert Path(record["tokenizer"]) == tokenizer.resolve()
    assert (dit_cli_run.run_dir.parent / "latest").resolve() == dit_cli_run.run_dir
    for name in ("dit.pt", "checkpoints/last.ckpt", "samples/step000020.png", "metrics.csv"):
        assert (dit_cli_run.run_dir / name).is_file(), name
    assert "dit.pt" in dit_cli_run.result.stdout and "sample_grid" in dit_cli_run.result.stdout


def test_latent_cache_is_keyed_by_the_tokenizer(dit_cli_run: CliRun, vqvae_cli_run: CliRun) -> None:
    cache = Path(json.loads((dit_cli_run.run_dir / "run.json").read_text())["latent_cache"])
    assert cache.parent == dit_cli_run.root / "outputs" / "synthetic_image" / "latents"
    assert cache.name == file_digest(vqvae_cli_run.run_dir / "tokenizer.pt")
    meta = json.loads((cache / "meta.json").read_text())
    train = np.load(cache / "train_latents.npy", mmap_mode="r")
    assert list(train.shape) == meta["shapes"]["train"] and train.shape[1:] == (1, 8, 7, 7)  # hflip off: one view
    assert len(meta["mean"]) == len(meta["std"]) == 8


def test_dit_file_holds_ema_weights_and_loads_with_weights_only(dit_cli_run: CliRun) -> None:
    loaded = load_dit(dit_cli_run.run_dir / "dit.pt")
    assert loaded.model.config["preset"] == "XS" and loaded.model.num_classes == 10 and loaded.objective.name == "flow"
    assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
    checkpoint = torch.load(dit_cli_run.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    ema = {k.removeprefix("ema.module."): v for k, v in checkpoint["state_dict"].items() if k.startswith("ema.module.")}
    assert ema.keys() == loaded.model.state_dict().keys()
    assert all(torch.equal(ema[k], v) for k, v in loaded.model.state_dict().items())
    assert any(k.startswith("model.") for k in checkpoint["state_dict"])  # the raw weights too


def test_sample_writes_npz_and_a_grid_with_one_row_per_class(dit_cli_run: CliRun) -> None:
    root = dit_cli_run.root
    result = run_cli("stage=sample", f"paths.root={root}", "sample.num=23", "sample.steps=2", "sample.sampler=euler", "sample.cfg_scale=2.0", *SMALL_SYNTHETIC, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(root, "sample")
    with np.load(run / "samples.npz") as samples:
        images, labels = samples["images"], samples["labels"]
    assert images.shape == (23, 1, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == sorted(labels.tolist()) and set(labels.tolist()) == set(range(10))
    grid = Image.open(run / "grid.png")
    assert grid.size == (3 * 30 + 2, 10 * 30 + 2)  # 10 rows (classes) of at most 3 tiles of 28 px with 2 px gaps
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_eval_writes_scores_and_caches_the_classifier(dit_cli_run: CliRun) -> None:
    root = dit_cli_run.root
    common = ("stage=eval", f"paths.root={root}", "eval.num_samples=40", "eval.classifier_epochs=1", "sample.steps=2", "logger=csv", *SMALL_SYNTHETIC)
    first = run_cli(*common, cwd=root)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((root / "outputs" / "synthetic_image" / "eval" / "latest" / "eval.json").read_text())
    for key in ("eval/cond_accuracy", "eval/fd_classifier", "eval/fd_classifier_real_vs_real", "eval/fd_classifier_recon_vs_real", "eval/classifier_test_accuracy"):
        assert np.isfinite(report[key]), key
    assert 0.0 <= report["eval/cond_accuracy"] <= 1.0 and report["num_samples"] == 20  # capped at the test split
    assert "eval/fid" not in report and "Inception" in report["fid_note"]
    assert list((root / "outputs" / "synthetic_image" / "classifier").glob("*/classifier.pt"))
    second = run_cli(*common, cwd=root)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "cached" in (second.stdout + second.stderr).lower()


def test_a_sampler_of_the_other_objective_exits_2(dit_cli_run: CliRun) -> None:
    root = dit_cli_run.root
    result = run_cli("stage=sample", f"paths.root={root}", "sample.sampler=ddim", "logger=none", *SMALL_SYNTHETIC, cwd=root)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: sample.sampler=ddim: sampler 'ddim' does not fit objective flow; valid: euler, heun"]


def test_sample_grid_shift_and_restarts_are_recorded_and_a_grid_shift_is_refused_for_a_ddpm_dit(dit_cli_run: CliRun, tmp_path: Path) -> None:
    root = dit_cli_run.root
    common = ("stage=eval", f"paths.root={root}", "eval.num_samples=10", "eval.classifier_epochs=1", "sample.steps=2", "logger=none", *SMALL_SYNTHETIC)
    shifted = run_cli(*common, "sample.grid_shift=3", "sample.restart.count=2", "sample.restart.steps=1", cwd=root)
    assert shifted.returncode == 0, shifted.stderr[-3000:]
    report = json.loads((root / "outputs" / "synthetic_image" / "eval" / "latest" / "eval.json").read_text())
    assert report["grid_shift"] == 3.0 and report["steps"] == 2
    assert (report["restarts"], report["restart_time"], report["restart_steps"]) == (2, 0.3, 1)
    assert "restart_temperature" not in report  # a velocity DiT has no softmax
    payload = torch.load(dit_cli_run.run_dir / "dit.pt", weights_only=True)
    payload["objective"] = {"name": "ddpm", "schedule": "linear", "num_timesteps": 100}
    ddpm = tmp_path / "dit.pt"
    torch.save(payload, ddpm)
    refused = run_cli("stage=sample", f"paths.root={tmp_path}", f"dit_ckpt={ddpm}", "sample.grid_shift=3", "logger=none", *SMALL_SYNTHETIC, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [f"error: sample.grid_shift=3 shifts a flow sampler's grid, but {ddpm} was trained with objective=ddpm"]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["stage=dit"], "no finished vqvae run for data=synthetic_image"),
        (["stage=dit", "tokenizer_ckpt=/nope/tokenizer.pt"], "tokenizer_ckpt=/nope/tokenizer.pt: no file at /nope/tokenizer.pt"),
        (["stage=sample"], "run first: python -m pipeline stage=dit data=synthetic_image"),
        (["stage=eval"], "run first: python -m pipeline stage=dit data=synthetic_image"),
        (["stage=sample", "sample.num=0"], "sample.num must be at least 1 (got 0)"),
        (["stage=sample", "sample.steps=0"], "sample.steps and sample.batch_size must be at least 1"),
        (["stage=sample", "sample.grid_shift=0"], "sample.grid_shift must be > 0 (got 0)"),
        (["stage=eval", "sample.restart.count=-1"], "sample.restart needs count >= 0, steps >= 1, 0 < time < 1 and temperature > 0 (got count -1, time 0.3, steps 3, temperature 1.0)"),
        (["stage=sample", "sample.restart.time=1"], "sample.restart needs count >= 0, steps >= 1, 0 < time < 1 and temperature > 0 (got count 0, time 1, steps 3, temperature 1.0)"),
        (["stage=sample", "sample.restart.temperature=0"], "(got count 0, time 0.3, steps 3, temperature 0)"),
        (["stage=dit", "diffusion.ema_warmup=1"], "diffusion.ema_decay must be in [0, 1) and diffusion.ema_warmup > 1 (got 0.999 and 1)"),
        (["stage=dit", "diffusion.ema_decay=1"], "(got 1 and 10)"),
        (["stage=dit", "objective=ddpm", "sample.sampler=heun"], "sample.sampler=heun: sampler 'heun' does not fit objective ddpm; valid: ddpm, ddim"),
    ],
)
def test_missing_inputs_exit_2_with_the_command_to_run_first(tmp_path: Path, overrides: list[str], expected: str) -> None:
    if "objective=ddpm" in overrides:  # past the tokenizer check
        overrides = [*overrides, f"tokenizer_ckpt={untrained_tokenizer(tmp_path / 'tokenizer', 'data=synthetic_image')}"]
    result = run_cli(*overrides, f"paths.root={tmp_path}", "data=synthetic_image", "logger=none", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and expected in line
    if overrides == ["stage=dit"]:
        assert "run first: python -m pipeline stage=vqvae data=synthetic_image" in line


# slow: the same one-line path as garbage and wrong_config, 10 s each (make test-all runs them)
@pytest.mark.parametrize("content", ["garbage", pytest.param("truncated", marks=pytest.mark.slow), pytest.param("missing_keys", marks=pytest.mark.slow), "wrong_config"])
def test_a_damaged_dit_file_exits_2_with_one_line(dit_cli_run: CliRun, tmp_path: Path, content: str) -> None:
    original = dit_cli_run.run_dir / "dit.pt"
    damaged = tmp_path / "dit.pt"
    if content == "garbage":
        damaged.write_bytes(b"not a checkpoint")
    elif content == "truncated":
        damaged.write_bytes(original.read_bytes()[:5000])
    else:
        payload = torch.load(original, weights_only=True)
        if content == "missing_keys":
            del payload["objective"]
        else:
            payload["config"]["hidden_size"] = 2 * payload["config"]["hidden_size"]
        torch.save(payload, damaged)
    result = run_cli("stage=sample", f"paths.root={tmp_path}", f"dit_ckpt={damaged}", "logger=none", *SMALL_SYNTHETIC, cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot read DiT file {damaged}" if content in ("garbage", "truncated") else f"error: {damaged} is damaged")
    assert original.is_file()


def test_training_sample_grid_is_logged_to_wandb(dit_cli_run: CliRun) -> None:
    (wandb_run,) = (dit_cli_run.run_dir / "wandb").glob("offline-run-*")
    grids = sorted((wandb_run / "files" / "media" / "images" / "samples").glob("grid_*.png"))
    assert grids, "no samples/grid image in the offline W&B run"
    assert Image.open(grids[-1]).size == Image.open(dit_cli_run.run_dir / "samples" / "step000020.png").size
    logged = [items(h) for h in run_log(dit_cli_run.run_dir)["history"]]
    grid_steps = [h["trainer/global_step"] for h in logged if h.get("samples/grid/_type") == "images/separated"]
    assert grid_steps and grid_steps[-1] == 20  # the final grid, from the same seeded noise as the ones before


@pytest.mark.slow  # 20 s of compiling; bf16 and compile are GPU features, checked here only for working at all
def test_bf16_mixed_and_compile_train_on_cpu(dit_cli_run: CliRun) -> None:
    """bf16 autocast on CPU (slow here: no native bf16, hence a one-block DiT) and torch.compile, together."""
    root = dit_cli_run.root / "bf16"
    tokenizer = dit_cli_run.root / "outputs" / "synthetic_image" / "vqvae" / "latest" / "tokenizer.pt"
    result = run_cli(
        "stage=dit", "debug=fast", "trainer.max_steps=4", f"paths.root={root}", f"tokenizer_ckpt={tokenizer}", "logger=csv",
        "trainer.precision=bf16-mixed", "compile=true", "dit.depth=1", "dit.hidden_size=64", "dit.num_heads=2",
        "stage.grid_steps=1", *SMALL_SYNTHETIC, cwd=dit_cli_run.root,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((only_run(root, "dit") / "run.json").read_text())
    assert record["status"] == "finished" and record["step"] == 4
    assert record["compiled"] is True, result.stderr[-2000:]
    assert "compiled with torch.compile" in result.stdout + result.stderr
    loaded = load_dit(only_run(root, "dit") / "dit.pt")
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in loaded.model.parameters())


@pytest.fixture()
def stage_two_inputs(dit_cli_run: CliRun, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A root with the session's prepared data and latent cache; the tokenizer and cache folder they belong to."""
    shutil.copytree(dit_cli_run.root / "data", tmp_path / "data")
    shutil.copytree(dit_cli_run.root / "outputs" / "synthetic_image" / "latents", tmp_path / "outputs" / "synthetic_image" / "latents")
    (cache,) = (tmp_path / "outputs" / "synthetic_image" / "latents").iterdir()
    tokenizer = Path(json.loads((cache / "meta.json").read_text())["tokenizer"])
    return tmp_path, tokenizer, cache


@pytest.mark.parametrize("damage", ["truncated", pytest.param("other_shape", marks=pytest.mark.slow), "other_tokenizer"])  # other_shape: as other_tokenizer
def test_a_latent_cache_that_does_not_match_the_tokenizer_exits_2(stage_two_inputs: tuple[Path, Path, Path], damage: str) -> None:
    root, tokenizer, cache = stage_two_inputs
    latents = cache / "train_latents.npy"
    if damage == "truncated":
        latents.write_bytes(latents.read_bytes()[:200])
        expected = "cannot be read"
    elif damage == "other_shape":
        array = np.load(latents)
        np.save(latents, array[:, :, :, :-1])
        expected = "holds train latents of shape"
    else:
        meta = json.loads((cache / "meta.json").read_text())
        (cache / "meta.json").write_text(json.dumps({**meta, "tokenizer_id": "0123456789abcdef"}))
        expected = "was made by tokenizer 0123456789abcdef"
    before = files_and_times(cache)
    result = run_cli("stage=dit", f"paths.root={root}", *SMALL_SYNTHETIC, "debug=fast", f"tokenizer_ckpt={tokenizer}", "logger=none", cwd=root)
    assert_one_error_line(result, f"the latent cache {cache}", expected, "delete that folder and run again to rebuild it")
    assert files_and_times(cache) == before


def test_resuming_a_dit_run_with_another_tokenizer_exits_2(dit_cli_run: CliRun, tmp_path: Path) -> None:
    run_dir = tmp_path / "outputs" / "synthetic_image" / "dit" / dit_cli_run.run_dir.name
    shutil.copytree(dit_cli_run.run_dir, run_dir, symlinks=True)
    trained_on = Path(json.loads((run_dir / "run.json").read_text())["tokenizer"])
    other = tmp_path / "other_tokenizer.pt"
    payload = torch.load(trained_on, weights_only=True)
    payload["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    torch.save(payload, other)
    before = files_and_times(run_dir)
    result = run_cli("stage=dit", f"paths.root={tmp_path}", *SMALL_SYNTHETIC, "debug=fast", f"resume={run_dir}", f"tokenizer_ckpt={other}", "logger=none", cwd=tmp_path)
    assert_one_error_line(result, f"tokenizer_ckpt={other} is not the tokenizer {run_dir} trained on ({trained_on})", "drop tokenizer_ckpt= to resume")
    assert files_and_times(run_dir) == before


def test_stage_two_declares_its_tokenizer_and_logs_its_dit(dit_cli_run: CliRun, vqvae_cli_run: CliRun) -> None:
    log = run_log(dit_cli_run.run_dir)
    (run,) = log["run"]
    assert list(run.tags) == ["image", "vqvae-small", "dit-XS", "flow"] and run.job_type == "dit"
    tokenizer_reference = f"tokenizer-synthetic_image:id-{file_digest(vqvae_cli_run.run_dir / 'tokenizer.pt')}"
    assert merged(log["config"])["lineage/tokenizer"] == tokenizer_reference
    (artifact,) = log["artifact"]
    assert artifact.name == "dit-synthetic_image" and f"id-{file_digest(dit_cli_run.run_dir / 'dit.pt')}" in artifact.aliases
    record = json.loads((dit_cli_run.run_dir / "run.json").read_text())
    assert record["inputs"] == {"tokenizer": tokenizer_reference}


class RecordingApi:
    """Stands in for ``wandb.Api`` (no network here): records which runs and artifacts the command asks for."""

    default_entity = "me"

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def run(self, path: str) -> RecordingApi:
        self.calls.append(("run", path))
        return self

    def artifact(self, name: str, type: str | None = None) -> str:
        self.calls.append(("artifact", name, str(type)))
        return name

    def use_artifact(self, artifact: str) -> None:
        self.calls.append(("use_artifact", artifact))


def test_lineage_declares_each_offline_input_once(dit_cli_run: CliRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = dit_cli_run.root / "outputs"
    pending = [run for run in pending_runs([root]) if run.run_dir.path == dit_cli_run.run_dir]
    assert len(pending) == 1 and pending[0].project == "pipeline"
    assert main(["--dry-run", str(dit_cli_run.run_dir)]) == 0
    assert f"{json.loads((dit_cli_run.run_dir / 'run.json').read_text())['wandb_id']} <- tokenizer-synthetic_image:id-" in capsys.readouterr().out

    record = (dit_cli_run.run_dir / "run.json").read_text()
    try:
        api = RecordingApi()
        declared = declare(api, pending[0])
        reference = pending[0].inputs["tokenizer"]
        assert declared == [f"me/pipeline/{reference}"]
        assert api.calls == [("run", f"me/pipeline/{pending[0].wandb_id}"), ("artifact", f"me/pipeline/{reference}", "model"),
                             ("use_artifact", f"me/pipeline/{reference}")]
        assert not [run for run in pending_runs([root]) if run.run_dir.path == dit_cli_run.run_dir]
    finally:
        (dit_cli_run.run_dir / "run.json").write_text(record)  # the session's fixture, as it was
