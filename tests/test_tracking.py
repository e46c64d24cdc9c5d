"""What a stage-one run tells W&B, read back from the offline run log (`run-<id>.wandb`); stage two's is in test_stage_two_cli."""

from __future__ import annotations

import json

import pytest

from conftest import CliRun, compose_config
from pipeline.fileio import file_digest
from pipeline.metric_goals import metric_summary
from pipeline.tracking import run_tags
from wandb_records import items, merged, run_log


@pytest.mark.parametrize(
    ("name", "summary"),
    [("val/psnr", "max,last"), ("test/ssim", "max,last"), ("eval/cond_accuracy", "max,last"), ("val/si_sdr", "max,last"),
     ("val/codebook_usage", "max,last"), ("train/loss", "min,last"), ("val/rec_loss", "min,last"), ("val/mel_l1", "min,last"),
     ("eval/fd_classifier", "min,last"), ("eval/fid", "min,last"), ("eval/bits_per_byte", "min,last"), ("lr-AdamW", "last"),
     ("val/commitment", "last"), ("eval/bits_per_byte_ratio", "last")],
)
def test_each_metric_gets_the_summary_a_comparison_needs(name: str, summary: str) -> None:
    assert metric_summary(name) == summary


def test_stage_one_run_log_holds_config_tags_metric_summaries_media_and_the_tokenizer_artifact(vqvae_cli_run: CliRun) -> None:
    log = run_log(vqvae_cli_run.run_dir)
    (run,) = log["run"]
    assert list(run.tags) == ["image", "vqvae-small"] and run.run_group == "synthetic_image" and run.job_type == "vqvae"
    assert run.display_name == vqvae_cli_run.run_dir.name

    config = merged(log["config"])
    assert config["data.name"] == "synthetic_image" and config["vqvae.size"] == "small" and config["trainer.max_steps"] == 20

    metrics = {m.name: m for m in log["metric"] if m.name}
    for name, wanted in (("val/psnr", {"max", "last"}), ("train/loss", {"min", "last"}), ("val/rec_loss", {"min", "last"})):
        assert metrics[name].step_metric == "trainer/global_step"
        assert {field.name for field, value in metrics[name].summary.ListFields() if value} == wanted, name

    summary = merged(log["summary"])
    assert summary["params/trainable"] > 100_000 and summary["params/frozen"] >= 0
    assert summary["perf/mean_examples_per_sec"] > 0 and summary["perf/peak_memory_gb"] > 0.1
    assert set(summary["val/psnr"]) == {"max", "last"} and summary["val/psnr"]["max"] >= summary["val/psnr"]["last"]
    history = [items(h) for h in log["history"]]
    media = [h for h in history if h.get("val/reconstructions/_type") == "images/separated"]
    assert [h["trainer/global_step"] for h in media] == [10, 20]  # at each validation
    (files,) = (vqvae_cli_run.run_dir / "wandb").glob("offline-run-*/files")
    assert all((files / name).is_file() for h in media for name in h["val/reconstructions/filenames"])
    assert any("perf/examples_per_sec" in h for h in history)

    (artifact,) = log["artifact"]
    tokenizer = vqvae_cli_run.run_dir / "tokenizer.pt"
    assert artifact.name == "tokenizer-synthetic_image" and artifact.type == "model"
    assert set(artifact.aliases) == {"latest", f"id-{file_digest(tokenizer)}"}
    assert [entry.path for entry in artifact.manifest.contents] == ["tokenizer.pt"]
    record = json.loads((vqvae_cli_run.run_dir / "run.json").read_text())
    assert record["artifact"] == f"tokenizer-synthetic_image:id-{file_digest(tokenizer)}"
    assert record["wandb_project"] == "pipeline" and record["stats"]["params/trainable"] == summary["params/trainable"]


@pytest.mark.parametrize(
    ("overrides", "tags"),
    [
        (["stage=vqvae"], ["image", "vqvae-small"]),
        (["stage=dit", "objective=ddpm", "dit=S", "tags=[mine]"], ["image", "vqvae-small", "dit-S", "ddpm", "mine"]),
        (["stage=eval", "data=spoken_digits", "trainer.devices=auto"], ["audio", "vqvae-small", "dit-XS", "flow"]),
        (["stage=vqvae", "strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=[0,1]"], ["image", "vqvae-small", "ddp"]),
        (["stage=dit", "data=paired", "condition=audio"], ["image", "vqvae-small", "dit-XS", "flow", "condition-audio"]),
        (["stage=ar"], ["image", "vqvae-small", "ar"]),
        (["stage=eval", "prior=ar"], ["image", "vqvae-small", "ar"]),
    ],
)
def test_run_tags_name_modality_sizes_objective_and_strategy(overrides: list[str], tags: list[str]) -> None:
    assert run_tags(compose_config(*overrides)) == tags
