"""Audio and text through the real CLI: stage one, stage two and sampling on data the run makes itself."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import assert_one_error_line, files_and_times, run_cli
from pipeline.diffusion import load_dit
from pipeline.tokenizer import load_tokenizer

SMALL = {
    "audio": ("data=synthetic_audio", "data.synthetic_per_class=8", "data.val_size=16", "data.test_size=16", "data.clip_length=1024"),
    "text": ("data=synthetic_text", "data.synthetic_documents=120", "data.val_size=20", "data.test_size=20", "data.seq_length=64"),
}


@dataclass
class ModalityRuns:
    modality: str
    root: Path
    vqvae: Path
    dit: Path
    sample: Path


def _run(root: Path, modality: str, stage: str, *extra: str) -> Path:
    result = run_cli(f"stage={stage}", f"paths.root={root}", *SMALL[modality], *extra, cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = SMALL[modality][0].removeprefix("data=")
    (run,) = [p for p in (root / "outputs" / data / stage).iterdir() if p.name != "latest" and p.is_dir()]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    return run


@pytest.fixture(scope="module", params=["audio", "text"])
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ModalityRuns:
    modality = request.param
    root = tmp_path_factory.mktemp(modality)
    vqvae = _run(root, modality, "vqvae", "debug=fast", "logger=csv", "trainer.max_steps=6", "trainer.val_check_interval=3")
    dit = _run(root, modality, "dit", "debug=fast", "logger=csv", "data.batch_size=16", "trainer.max_steps=4", "trainer.val_check_interval=2", "stage.grid_steps=2")
    sample = _run(root, modality, "sample", "sample.num=12", "sample.steps=2")
    return ModalityRuns(modality, root, vqvae, dit, sample)


def test_stage_one_logs_the_modality_metrics_and_writes_its_media(runs: ModalityRuns) -> None:
    record = json.loads((runs.vqvae / "run.json").read_text())
    assert record["modality"] == runs.modality
    trained_with = (runs.vqvae / "hparams.yaml").read_text()
    assert ("vqvae.code_corruption._target_: pipeline.tokenizer.CodeCorruption" in trained_with) == (runs.modality == "text")
    expected = {"audio": {"val/si_sdr", "val/mel_l1", "test/si_sdr"}, "text": {"val/byte_accuracy", "test/byte_accuracy"}}[runs.modality]
    assert expected | {"val/codebook_usage", "val/perplexity"} <= set(record["metrics"])
    assert all(np.isfinite(record["metrics"][key]) for key in expected)
    if runs.modality == "audio":
        assert (runs.vqvae / "samples" / "recon_step000006.png").is_file()
        clip, rate = soundfile.read(runs.vqvae / "samples" / "recon_step000006" / "reconstruction_000.wav")
        assert rate == 8000 and clip.shape == (1024,)
    else:
        text = (runs.vqvae / "samples" / "recon_step000006.txt").read_text(encoding="utf-8")
        assert text.startswith("## original") and "## reconstruction" in text


def test_tokenizer_file_describes_a_1d_latent_sequence(runs: ModalityRuns) -> None:
    tokenizer = load_tokenizer(runs.vqvae / "tokenizer.pt")
    meta = tokenizer.tokenizer_metadata
    dim, length = {"audio": (4, 1024 // 16), "text": (8, 64 // 2)}[runs.modality]  # vqvae=small: audio x16 to 4 channels, text x2 to 8
    assert meta["modality"] == runs.modality and meta["latent_shape"] == [dim, length]
    example = torch.zeros(2, 1, 1024) if runs.modality == "audio" else torch.full((2, 64), 65, dtype=torch.long)
    quantized = tokenizer.quantize(tokenizer.encode(example))
    assert quantized.indices.shape[:2] == (2, length)
    assert torch.allclose(tokenizer.decode_indices(quantized.indices), tokenizer.decode(quantized.quantized), atol=1e-5)


def test_stage_two_trains_a_dit_on_the_latent_sequence(runs: ModalityRuns) -> None:
    record = json.loads((runs.dit / "run.json").read_text())
    cache = Path(record["latent_cache"])
    shape = {"audio": (1, 4, 64), "text": (1, 8, 32)}[runs.modality]  # views, channels, latents
    assert np.load(cache / "train_latents.npy", mmap_mode="r").shape[1:] == shape
    suffix = {"audio": ".png", "text": ".txt"}[runs.modality]
    assert (runs.dit / "samples" / f"step000004{suffix}").is_file() and (runs.dit / "dit.pt").is_file()
    dit = load_dit(runs.dit / "dit.pt")  # text predicts the tokenizer's codes, audio regresses velocities
    assert dit.objective.config["prediction"] == {"audio": "velocity", "text": "codes"}[runs.modality]
    assert dit.model.config["codebook_size"] == {"audio": 0, "text": load_tokenizer(runs.vqvae / "tokenizer.pt").quantizer.codebook_size}[runs.modality]


def test_samples_are_readable_files(runs: ModalityRuns) -> None:
    with np.load(runs.sample / "samples.npz") as samples:
        arrays = dict(samples)
    if runs.modality == "audio":
        assert arrays["audio"].shape == (12, 1024) and arrays["audio"].dtype == np.float32 and int(arrays["sample_rate"]) == 8000
        assert arrays["labels"].dtype == np.int64 and sorted(arrays["labels"].tolist()) == arrays["labels"].tolist()
        wavs = sorted((runs.sample / "samples").glob("*.wav"))
        assert len(wavs) == 12 and (runs.sample / "samples.png").is_file()
        clip, rate = soundfile.read(wavs[0], dtype="float32")
        assert rate == 8000 and clip.shape == (1024,) and np.abs(clip - arrays["audio"][0]).max() < 1e-4  # 16-bit PCM
    else:
        assert arrays["bytes"].shape == (12, 64) and arrays["bytes"].dtype == np.uint8 and "labels" not in arrays  # text is unconditional
        text = (runs.sample / "samples.txt").read_text(encoding="utf-8")
        assert text.startswith("## samples 0-7") and "## samples 8-11" in text
    assert list((runs.sample / "wandb").glob("offline-run-*/run-*.wandb"))


def test_eval_scores_generated_examples_beside_real_and_reconstructed_ones(runs: ModalityRuns) -> None:
    common = ("stage=eval", f"paths.root={runs.root}", *SMALL[runs.modality], "eval.num_samples=12", "eval.classifier_epochs=1", "sample.steps=2", "logger=csv")
    result = run_cli(*common, cwd=runs.root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = SMALL[runs.modality][0].removeprefix("data=")
    report = json.loads((runs.root / "outputs" / data / "eval" / "latest" / "eval.json").read_text())
    assert report["num_samples"] == 12
    if runs.modality == "audio":
        keys = ["eval/cond_accuracy", "eval/fd_classifier", "eval/fd_classifier_real_vs_real", "eval/fd_classifier_recon_vs_real",
                "eval/classifier_test_accuracy", "eval/classifier_recon_accuracy"]
        assert 0.0 <= report["eval/cond_accuracy"] <= 1.0 and "temperature" not in report  # a velocity DiT has no softmax
        assert list((runs.root / "outputs" / data / "classifier").glob("*/classifier.pt"))
    else:
        keys = ["eval/bits_per_byte", "eval/bits_per_byte_real", "eval/bits_per_byte_recon", "eval/bits_per_byte_ratio",
                "eval/vocab_share", "eval/vocab_share_real", "eval/distinct_4", "eval/distinct_4_real",
                "eval/repeat_share", "eval/repeat_share_real", "eval/bits_per_byte_norun_real"]
        assert 0.0 < report["eval/bits_per_byte_real"] < report["eval/bits_per_byte"]  # 20 steps of training: worse than real text
        assert report["eval/vocab_share_real"] == 1.0  # held-out template sentences use only train words
        assert 0.0 <= report["eval/repeat_share"] <= 1.0 and report["eval/repeat_share_real"] == 0.0  # template sentences hold no runs
        assert report["ngram_order"] == 5 and report["vocabulary_size"] > 20 and report["temperature"] == 1.0  # the code DiT's
    assert all(np.isfinite(report[key]) for key in keys), report
    assert (report["restarts"], report["restart_steps"]) == ((96, 2) if runs.modality == "text" else (0, 3))
    assert report.get("restart_temperature") == (1.15 if runs.modality == "text" else None)  # the modality's restart sampling reaches the sampler; a velocity DiT has no softmax


@pytest.mark.parametrize("runs", ["text"], indirect=True)  # text tokenizers train with code corruption
def test_a_bad_code_corruption_strength_exits_2_with_one_line(runs: ModalityRuns) -> None:
    before = files_and_times(runs.root)
    result = run_cli("stage=vqvae", f"paths.root={runs.root}", *SMALL["text"], "vqvae.code_corruption.max_replace=1.5", cwd=runs.root)
    assert_one_error_line(result, "vqvae.code_corruption", "max_replace in [0, 1]", "1.5")
    after = files_and_times(runs.root)
    assert {path: after.get(path) for path in before} == before  # every file already written is untouched
    new = [path for path in after.keys() - before.keys() if ".hydra" not in path.parts and path.name != "pipeline.log"]
    assert not new  # beside Hydra's record of the command and its log, nothing: no run, no tokenizer
    assert (runs.root / "outputs" / "synthetic_text" / "vqvae" / "latest").resolve() == runs.vqvae


@pytest.mark.parametrize("runs", ["text"], indirect=True)
@pytest.mark.parametrize(("override", "words"), [
    ("modality.evaluator.ngram_order=9", ("modality.evaluator.ngram_order", "1..7", "9")),
    ("modality.evaluator.repeat_run=1", ("modality.evaluator.repeat_run", ">= 2", "1")),
    ("modality.evaluator.distinct_n=0", ("modality.evaluator.distinct_n", ">= 1", "0")),
])
def test_a_bad_text_evaluator_setting_exits_2_with_one_line(runs: ModalityRuns, override: str, words: tuple[str, ...]) -> None:
    before = files_and_times(runs.root)
    result = run_cli("stage=eval", f"paths.root={runs.root}", *SMALL["text"], "logger=csv", override, cwd=runs.root)
    assert_one_error_line(result, *words)
    after = files_and_times(runs.root)
    assert {path: after.get(path) for path in before} == before  # every file already written is untouched
    new = [path for path in after.keys() - before.keys() if ".hydra" not in path.parts and path.name != "pipeline.log"]
    assert not new  # no eval run, no eval.json
