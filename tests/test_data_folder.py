"""data=folder: the modality detected from the files, or taken from modality=; a real CLI run on WAV folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import compose_config, run_cli
from pipeline.data import AudioDataModule, ImageDataModule, TextDataModule
from pipeline.data.folder import folder_datamodule
from pipeline.detect import detect_modality, modality_override
from pipeline.errors import UserError
from pipeline.media import save_wav


def wav_folder(root: Path, classes: int = 2, per_class: int = 6, length: int = 1024) -> Path:
    rng = np.random.default_rng(0)
    for label in range(classes):
        for i in range(per_class):
            t = np.arange(length) / 8000
            save_wav(0.5 * np.sin(2 * np.pi * (200 + 300 * label) * t + rng.uniform(0, 6)), 8000, root / f"class{label}" / f"{i}.wav")
    return root


def test_detects_each_modality_from_the_files(tmp_path: Path) -> None:
    assert detect_modality(wav_folder(tmp_path / "audio")) == "audio"
    (tmp_path / "images" / "cat").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "images" / "cat" / "a.png")
    assert detect_modality(tmp_path / "images") == "image"
    (tmp_path / "notes.txt").write_text("Some text.\n\nMore text.\n")
    assert detect_modality(tmp_path / "notes.txt") == "text"
    (tmp_path / "pixels.csv").write_text("0,1\n")
    assert detect_modality(tmp_path / "pixels.csv") == "image"
    assert detect_modality(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert detect_modality(tmp_path / "empty") is None


def test_the_command_line_gets_the_detected_modality_unless_it_names_one(tmp_path: Path) -> None:
    text = tmp_path / "book.txt"
    text.write_text("words")
    assert modality_override(["stage=vqvae", "data=folder", f"data.path={text}"]) == "modality=text"
    assert modality_override(["data=folder", f"data.path={text}", "modality=image"]) is None  # the user's choice stands
    assert modality_override(["data=mnist", f"data.path={text}"]) is None
    assert modality_override(["data=folder"]) is None


@pytest.mark.parametrize(("modality", "module"), [("image", ImageDataModule), ("audio", AudioDataModule), ("text", TextDataModule)])
def test_the_folder_config_builds_each_modality_module(modality: str, module: type, tmp_path: Path) -> None:
    cfg = compose_config("data=folder", f"data.path={tmp_path}", f"modality={modality}", root=tmp_path)
    assert cfg.data.modality == modality
    from hydra.utils import instantiate

    assert type(instantiate(cfg.data)) is module
    with pytest.raises(UserError, match="modality=video has no data module"):
        folder_datamodule("video", name="folder")


def test_stage_one_on_a_folder_of_wav_files(tmp_path: Path) -> None:
    folder = wav_folder(tmp_path / "clips")
    result = run_cli(
        "stage=vqvae", "data=folder", f"data.path={folder}", f"paths.root={tmp_path}", "data.num_classes=2", "data.clip_length=1024",
        "data.val_size=2", "data.test_size=2", "data.batch_size=4", "debug=fast", "trainer.max_steps=2", "trainer.val_check_interval=2", "logger=csv", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data=folder: modality=audio detected" in result.stderr
    record = json.loads((tmp_path / "outputs" / "folder" / "vqvae" / "latest" / "run.json").read_text())
    assert record["modality"] == "audio" and "val/si_sdr" in record["metrics"]
