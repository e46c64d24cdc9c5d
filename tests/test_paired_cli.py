"""Cross-modal stage two through the real CLI: DiTs conditioned on written and on spoken prompts (data=paired),
trained, sampled and scored on data the test makes; prompt mistakes exit 2 with one line."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import assert_one_error_line, files_and_times, run_cli, untrained_tokenizer

IMAGES = ("data=paired", "data.image.name=synthetic_image", "data.image.hub_id=null", "data.image.offline=synthetic",
          "data.image.synthetic_per_class=20", "data.image.val_size=20", "data.image.test_size=20", "data.batch_size=16")
AUDIO_PROMPTS = tuple(f"data.prompts.audio.data.{key}" for key in (
    "name=synthetic_audio", "hub_id=null", "offline=synthetic", "synthetic_per_class=8", "val_size=16", "test_size=16", "clip_length=1024"))
PROMPTS = {
    "text": ("condition=text", "data.prompts.text.seq_length=64", "condition.encoder.patch_size=4"),
    "audio": ("condition=audio", *AUDIO_PROMPTS, "condition.encoder.patch_size=8"),
}
SOURCE_DATA = {"image": ("data=synthetic_image",), "text": ("data=synthetic_text", "data.seq_length=64"), "audio": ("data=synthetic_audio", "data.clip_length=1024")}


@dataclass
class PairedRuns:
    root: Path
    tokenizers: dict[str, Path]

    def args(self, kind: str, *extra: str) -> tuple[str, ...]:
        return (f"paths.root={self.root}", *IMAGES, *PROMPTS[kind], f"tokenizer_ckpt={self.tokenizers['image']}",
                f"condition.tokenizer_ckpt={self.tokenizers[kind]}", "logger=csv", *extra)

    def dit(self, kind: str) -> Path:
        return self.root / "outputs" / f"paired_{kind}" / "dit" / "latest" / "dit.pt"

    def train(self, kind: str) -> None:
        """A ``kind``-prompt DiT, 6 steps, sharing the image tokenizer and latent cache."""
        result = run_cli("stage=dit", "debug=fast", "trainer.max_steps=6", "trainer.val_check_interval=6", "stage.grid_steps=2", *self.args(kind), cwd=self.root)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def paired_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PairedRuns]:
    """Untrained tokenizers for images, text and audio, and a text-prompt DiT trained for 6 steps on them."""
    root = tmp_path_factory.mktemp("paired")
    runs = PairedRuns(root, {modality: untrained_tokenizer(root / modality, *overrides) for modality, overrides in SOURCE_DATA.items()})
    runs.train("text")
    yield runs


def write_clip(path: Path, seconds: float = 0.12, frequency: float = 440.0) -> Path:
    t = np.arange(int(8000 * seconds)) / 8000
    soundfile.write(path, (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), 8000)
    return path


def test_a_text_prompt_dit_draws_for_held_out_and_given_prompts_and_is_scored(paired_runs: PairedRuns) -> None:
    root = paired_runs.root
    payload = torch.load(paired_runs.dit("text"), weights_only=True)
    condition = payload["metadata"]["condition"]
    assert condition["kind"] == "text" and Path(condition["tokenizer"]) == paired_runs.tokenizers["text"] and len(condition["mean"]) == 8
    assert condition["length"] == 16  # the latents of max_bytes=32 of the tokenizer's 64 bytes
    assert payload["config"]["num_classes"] == 0 and payload["config"]["prompt"] == {"channels": 8, "length": 16, "patch_size": 4, "depth": 2, "num_heads": 4}
    assert not any(name.startswith("alignment") for name in payload["state_dict"])  # the alignment head is for training only
    with (paired_runs.dit("text").parent / "metrics.csv").open() as handle:
        align_losses = [float(row["train/align_loss"]) for row in csv.DictReader(handle) if row.get("train/align_loss")]
    assert align_losses and all(math.isfinite(value) for value in align_losses)
    assert (root / "outputs" / "synthetic_image" / "latents").is_dir()  # the image latent cache is the image data's own
    run = json.loads((paired_runs.dit("text").parent / "run.json").read_text())
    assert run["status"] == "finished" and set(run["inputs"]) == {"tokenizer", "prompt_tokenizer"}
    assert run["prompt_tokenizer"] == str(paired_runs.tokenizers["text"])

    held_out = run_cli("stage=sample", "sample.num=20", "sample.steps=2", *paired_runs.args("text"), cwd=root)
    assert held_out.returncode == 0, held_out.stderr[-3000:]
    samples = np.load(root / "outputs" / "paired_text" / "sample" / "latest" / "samples.npz")
    assert samples["images"].shape == (20, 1, 28, 28) and samples["images"].dtype == np.uint8
    assert samples["labels"].tolist() == sorted(list(range(10)) * 2)  # one held-out prompt per digit, digits in turn

    given = run_cli("stage=sample", "sample.num=4", "sample.steps=2", "sample.prompt='a handwritten three'", *paired_runs.args("text"), cwd=root)
    assert given.returncode == 0, given.stderr[-3000:]
    latest = root / "outputs" / "paired_text" / "sample" / "latest"
    assert "labels" not in np.load(latest / "samples.npz") and json.loads((latest / "run.json").read_text())["prompt"] == "a handwritten three"

    scored = run_cli("stage=eval", "eval.num_samples=20", "eval.classifier_epochs=1", "sample.steps=2", *paired_runs.args("text"), cwd=root)
    assert scored.returncode == 0, scored.stderr[-3000:]
    report = json.loads((root / "outputs" / "paired_text" / "eval" / "latest" / "eval.json").read_text())
    assert report["condition"] == "text" and report["num_samples"] == 20 and report["heldout_prompts"] == 40  # 4 held-out templates x 10 digits
    assert 0.0 <= report["eval/cond_accuracy"] <= 1.0 and report["eval/fd_classifier"] >= 0.0
    assert (root / "outputs" / "synthetic_image" / "classifier").is_dir()


@pytest.mark.slow  # a second DiT: 35 s; the text one above covers the shared paths in make test
def test_a_spoken_prompt_dit_draws_for_a_wav_file_and_refuses_an_unreadable_one(paired_runs: PairedRuns) -> None:
    root = paired_runs.root
    paired_runs.train("audio")
    assert torch.load(paired_runs.dit("audio"), weights_only=True)["config"]["prompt"]["length"] == 64  # 1,024 samples / 16
    clip = write_clip(root / "three.wav")
    given = run_cli("stage=sample", "sample.num=3", "sample.steps=2", f"sample.prompt={clip}", *paired_runs.args("audio"), cwd=root)
    assert given.returncode == 0, given.stderr[-3000:]
    latest = root / "outputs" / "paired_audio" / "sample" / "latest"
    assert np.load(latest / "samples.npz")["images"].shape == (3, 1, 28, 28)
    assert json.loads((latest / "run.json").read_text())["inputs"]["dit"].startswith("dit-paired_audio:id-")

    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    before = files_and_times(root / "outputs")
    broken = run_cli("stage=sample", "sample.num=2", "sample.steps=1", f"sample.prompt={root / 'broken.wav'}", *paired_runs.args("audio"), cwd=root)
    assert_one_error_line(broken, "cannot read audio", "broken.wav")
    after = files_and_times(root / "outputs")
    assert {path: after.get(path) for path in before} == before  # nothing written before is touched
    assert not [path for path in after if path.name == "run.json" and path not in before]  # and no run was started


def test_prompts_of_the_wrong_kind_exit_2(paired_runs: PairedRuns) -> None:
    root = paired_runs.root
    wav = write_clip(root / "seven.wav")
    for kind, prompt, expected in [  # refused before torch loads, before even looking for the DiT
        ("text", f"sample.prompt={wav}", "is an audio file, but this DiT reads text prompts"),
        ("audio", "sample.prompt='a handwritten three'", "this DiT reads spoken prompts: sample.prompt must be an audio file"),
    ]:
        assert_one_error_line(run_cli("stage=sample", prompt, *paired_runs.args(kind), cwd=root, timeout=60), expected)
    other = run_cli("stage=sample", "sample.num=2", *paired_runs.args("audio", f"dit_ckpt={paired_runs.dit('text')}"), cwd=root)
    assert_one_error_line(other, "was trained with condition=text, not condition=audio")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("stage=dit", "data=mnist", "condition=text"), "condition=text needs prompts paired with images: use data=paired"),
        (("stage=vqvae", "data=paired", "condition=audio"), "stage=vqvae runs on each data set alone: python -m pipeline stage=vqvae data=mnist"),
        (("stage=sample", "data=mnist", "sample.prompt=three"), "sample.prompt is for DiTs trained with condition=text or condition=audio"),
        (("stage=dit", "data=paired_table", "condition=text"), "data=table_text needs data.table=TABLE"),
        (("stage=vqvae", "data=paired_table", "data.table=rows.csv", "condition=text"),
         "python -m pipeline stage=vqvae data=mnist data.name=table_images data.hub_id=rows.csv data.offline=null data.image_column=image"),
    ],
)
def test_condition_mistakes_exit_2_before_torch_loads(tmp_path: Path, overrides: tuple[str, ...], expected: str) -> None:
    result = run_cli(*overrides, f"paths.root={tmp_path}", cwd=tmp_path, timeout=60)
    assert_one_error_line(result, expected)
    assert not list(tmp_path.rglob("run.json"))  # no run started
