"""The AR baseline through the real CLI: `stage=ar` trains on the latent cache's codes, `stage=sample` and
`stage=eval` take `prior=ar` and score it as they score the DiT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SMALL_SYNTHETIC, assert_one_error_line, run_cli, untrained_tokenizer
from pipeline.ar import load_ar

TINY = ("ar.model.depth=2", "ar.model.width=64", "ar.model.num_heads=2")


@pytest.mark.slow  # 40 s; tests/test_ar.py covers the prior, its sampling and decoding in make test
def test_stage_ar_trains_samples_and_is_scored_like_the_dit(tmp_path: Path) -> None:
    tokenizer = untrained_tokenizer(tmp_path / "tokenizer", *SMALL_SYNTHETIC)
    common = (f"paths.root={tmp_path}", *SMALL_SYNTHETIC, f"tokenizer_ckpt={tokenizer}", "logger=csv")
    missing = run_cli("stage=sample", "prior=ar", *common, cwd=tmp_path)
    assert_one_error_line(missing, "no finished ar run for data=synthetic_image", "run first: python -m pipeline stage=ar data=synthetic_image")

    trained = run_cli("stage=ar", "debug=fast", *TINY, *common, cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "synthetic_image" / "ar" / "latest"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["step"] == 20 and "val/loss" in record["metrics"]
    prior = load_ar(run_dir / "ar.pt")
    assert prior.model.length == 49 and prior.model.vocab_size == 512 and prior.model.num_classes == 10
    assert prior.metadata["latent_shape"] == [8, 7, 7] and (tmp_path / "outputs" / "synthetic_image" / "latents").is_dir()

    drawn = run_cli("stage=sample", "prior=ar", "sample.num=20", "sample.top_k=50", "sample.temperature=0.9", *common, cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr[-3000:]
    sample_dir = tmp_path / "outputs" / "synthetic_image" / "sample" / "latest"
    samples = np.load(sample_dir / "samples.npz")
    assert samples["images"].shape == (20, 1, 28, 28) and samples["labels"].tolist() == sorted(list(range(10)) * 2)
    assert json.loads((sample_dir / "run.json").read_text())["inputs"]["ar"].startswith("ar-synthetic_image:id-")

    scored = run_cli("stage=eval", "prior=ar", "eval.num_samples=20", "eval.classifier_epochs=1", *common, cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    report = json.loads((tmp_path / "outputs" / "synthetic_image" / "eval" / "latest" / "eval.json").read_text())
    assert report["prior"] == "ar" and report["temperature"] == 1.0 and report["ar"].endswith("ar.pt")
    assert 0.0 <= report["eval/cond_accuracy"] <= 1.0 and "eval/fd_classifier" in report and report["sampling_seconds_per_example"] > 0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("stage=eval", "data=mnist", "prior=gpt"), "prior=gpt: valid: dit, ar"),
        (("stage=ar", "data=mnist", "condition=audio"), "the AR baseline is class-conditional or unconditional: condition=audio needs the DiT"),
        (("stage=ar", "data=paired"), "stage=ar runs on each data set alone: python -m pipeline stage=ar data=mnist"),
        (("stage=eval", "data=mnist", "prior=ar"), "no finished ar run for data=mnist"),
        (("stage=ar", "data=mnist", "tokenizer_ckpt=/nope.pt"), "tokenizer_ckpt=/nope.pt: no file at /nope.pt"),
    ],
)
def test_ar_mistakes_exit_2_before_torch_loads(tmp_path: Path, overrides: tuple[str, ...], expected: str) -> None:
    assert_one_error_line(run_cli(*overrides, f"paths.root={tmp_path}", cwd=tmp_path, timeout=60), expected)
