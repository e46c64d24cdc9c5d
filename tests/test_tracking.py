"""What a run tells W&B, read back from the offline run log (`run-<id>.wandb`), and the lineage command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import CliRun
from pipeline.fileio import file_digest
from pipeline.lineage import declare, main, pending_runs
from pipeline.metric_goals import metric_summary
from wandb_records import by_type, items, read_records


def run_log(run_dir: Path) -> dict[str, list[Any]]:
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    record = json.loads((run_dir / "run.json").read_text())
    assert path.name == f"run-{record['wandb_id']}.wandb"
    return by_type(read_records(path))


def merged(messages: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for message in messages:
        out.update(items(message))
    return out


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
