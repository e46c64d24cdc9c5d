"""The audio and text data layers: every source (synthetic, espeak-ng digits, WAV folders, a local hub folder,
fortunes, text files), packing documents into byte sequences, the loaders, and bad input. All offline; every
data_dir is a tmp_path."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import soundfile
import torch

from pipeline.data import AudioDataModule, TextDataModule
from pipeline.data import text as text_module
from pipeline.data.audio import SYNTHETIC_MARKER
from pipeline.data.spoken_digits import WORDS, make_spoken_digits
from pipeline.data.text import decode_bytes, pack_documents, read_fortune_file
from pipeline.errors import UserError


def audio_module(data_dir: Path, **overrides: Any) -> AudioDataModule:
    settings: dict[str, Any] = dict(name="tones", offline="synthetic", synthetic_per_class=6, clip_length=1024, val_size=10, test_size=10)
    return AudioDataModule(data_dir=str(data_dir), **{**settings, **overrides})


def text_module_for(data_dir: Path, **overrides: Any) -> TextDataModule:
    settings: dict[str, Any] = dict(name="sentences", offline="synthetic", synthetic_documents=120, seq_length=64, val_size=10, test_size=10)
    return TextDataModule(data_dir=str(data_dir), **{**settings, **overrides})


def write_wav_tree(root: Path, rate: int, seconds: float, per_class: int = 2) -> Path:
    """``root/<digit>/<n>.wav``: a tone per class at ``rate``."""
    for label in ("zero", "one", "two"):
        (root / label).mkdir(parents=True)
        for n in range(per_class):
            t = np.arange(int(rate * seconds)) / rate
            soundfile.write(root / label / f"{n}.wav", 0.3 * np.sin(2 * np.pi * 300 * (1 + len(label)) * t), rate, subtype="PCM_16")
    return root


# ---------------------------------------------------------------------------------------------------------------------
# Audio


def test_synthetic_audio_is_stored_as_float32_clips_and_served_as_b1t(tmp_path: Path) -> None:
    dm = audio_module(tmp_path, batch_size=8)
    dm.prepare_data()
    stored = datasets.load_from_disk(str(dm.prepared_dir))
    assert stored["train"].features["audio"].dtype == "float32" and stored["train"].features["audio"].shape == (1, 1024)
    assert dm.source_record["sizes"] == {"train": 40, "val": 10, "test": 10} and dm.source_record["kind"] == "generated"
    dm.setup("fit")
    clips, labels = next(iter(dm.train_dataloader()))
    assert clips.dtype == torch.float32 and clips.shape == (8, 1, 1024) and labels.dtype == torch.int64
    peaks = dm.splits["val"].clips.abs().amax(dim=(1, 2))
    assert torch.allclose(peaks, torch.full_like(peaks, 0.95), atol=1e-5)  # peak-normalised


def test_clips_are_trimmed_or_padded_at_the_end() -> None:
    dm = AudioDataModule(name="x", clip_length=4, peak_normalize=False)
    clips, _ = dm.to_examples([np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), np.array([0.5])], np.array([0, 1]))
    np.testing.assert_allclose(clips[:, 0], [[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.0, 0.0]])


def test_a_wav_folder_is_resampled_and_labelled_by_sorted_folder_names(tmp_path: Path) -> None:
    tree = write_wav_tree(tmp_path / "wavs", rate=16000, seconds=0.5, per_class=4)
    dm = AudioDataModule(name="wavs", path=str(tree), sample_rate=8000, clip_length=8192, val_size=2, test_size=2, data_dir=str(tmp_path / "data"))
    dm.prepare_data()
    dm.setup()
    record = dm.source_record
    assert record["kind"] == "local" and record["class_names"] == ["one", "two", "zero"]
    clip = dm.splits["train"].clips[0, 0].numpy()
    assert np.count_nonzero(clip) == pytest.approx(4000, abs=8)  # 0.5 s at 8 kHz, then zero padding
    assert set(dm.splits["train"].labels.tolist()) <= {0, 1, 2}


def test_the_espeak_digit_set_is_synthesised_and_labelled_synthetic(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make data-spoken-digits installs it)")
    folder = make_spoken_digits(tmp_path / "data" / "spoken_digits_espeak", per_class=2, seed=3)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [str(d) for d in range(10)]
    assert (folder / "README.md").read_text().startswith(SYNTHETIC_MARKER) and len((folder / "manifest.csv").read_text().splitlines()) == 21
    audio, rate = soundfile.read(folder / "7" / "7_0001.wav")
    assert rate == 8000 and 0.1 < len(audio) / rate < 1.5 and np.abs(audio).max() > 0.05
    dm = AudioDataModule(name="spoken_digits", offline="espeak_spoken_digits", val_size=2, test_size=2, data_dir=str(tmp_path / "data"))
    dm.prepare_data()
    assert dm.source_record["source"].startswith("SYNTHETIC spoken digits (espeak-ng)")
    assert len(WORDS) == 10


def test_a_missing_espeak_set_says_how_to_make_it(tmp_path: Path) -> None:
    dm = AudioDataModule(name="spoken_digits", offline="espeak_spoken_digits", data_dir=str(tmp_path), how_to_fix="run `make data-spoken-digits`")
    with pytest.raises(UserError, match=r"spoken_digits_espeak missing \(make it with: make data-spoken-digits\).*run `make data-spoken-digits`"):
        dm.prepare_data()


def test_a_local_hub_folder_with_an_audio_column_is_decoded_without_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "hub"
    folder.mkdir()
    stored = datasets.Features({"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                "label": datasets.ClassLabel(names=["low", "high"])})
    for split, count in (("train", 12), ("test", 4)):
        rows = []
        for n in range(count):
            buffer = io.BytesIO()
            t = np.arange(4000) / 16000
            soundfile.write(buffer, 0.5 * np.sin(2 * np.pi * (200 + 400 * (n % 2)) * t), 16000, format="WAV", subtype="PCM_16")
            rows.append({"bytes": buffer.getvalue(), "path": None})
        dataset = datasets.Dataset.from_dict({"audio": rows, "label": [n % 2 for n in range(count)]}, features=stored)
        # stored as the hub stores it: an Audio column (writing one needs no decoder when cast without decoding)
        dataset.cast_column("audio", datasets.Audio(decode=False)).to_parquet(str(folder / f"{split}.parquet"))
    dm = AudioDataModule(name="hubby", hub_id=str(folder), clip_length=2048, val_size=2, test_size=3, data_dir=str(tmp_path / "data"))
    dm.prepare_data()
    assert dm.source_record["kind"] == "hub" and dm.source_record["class_names"] == ["low", "high"]
    assert dm.source_record["sizes"] == {"train": 10, "val": 2, "test": 3}
    dm.setup()
    assert np.count_nonzero(dm.splits["test"].clips[0, 0].numpy()) == pytest.approx(2000, abs=8)  # 0.25 s resampled to 8 kHz


@pytest.mark.parametrize("problem", ["missing", "not_audio", "no_classes"])
def test_bad_audio_input_is_a_one_line_user_error(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "wavs"
    if problem == "not_audio":
        (path / "a").mkdir(parents=True)
        (path / "a" / "broken.wav").write_bytes(b"RIFF not really")
    elif problem == "no_classes":
        path.mkdir()
    dm = AudioDataModule(name="bad", path=str(path), val_size=1, test_size=1, data_dir=str(tmp_path / "data"))
    with pytest.raises(UserError) as caught:
        dm.prepare_data()
    assert "\n" not in str(caught.value)
    assert {"missing": "does not exist", "not_audio": "cannot read audio", "no_classes": "no class subfolders"}[problem] in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------------
# Text


def test_documents_are_packed_whole_and_long_ones_cut_at_whitespace() -> None:
    docs = ["short one", "another short", "x" * 5 + " " + "word " * 8 + "end"]
    packed = pack_documents(docs, 20)
    texts = [decode_bytes(row) for row in packed]
    assert texts[0] == "short one\nanother" or texts[0] == "short one"
    assert all(len(t.encode()) <= 20 for t in texts)
    joined = " ".join(t.replace("\n", " ") for t in texts).split()
    assert joined == " ".join(docs).split()  # nothing lost, no word cut in two
    assert packed.dtype == np.uint8 and packed.shape[1] == 20


def test_utf8_survives_and_padding_is_dropped() -> None:
    packed = pack_documents(["héllo wörld ✓"], 32)
    assert decode_bytes(packed[0]) == "héllo wörld ✓" and packed[0, -1] == 0


def test_synthetic_text_is_served_as_int64_byte_sequences(tmp_path: Path) -> None:
    dm = text_module_for(tmp_path, batch_size=4)
    dm.prepare_data()
    dm.setup()
    sequences, labels = next(iter(dm.train_dataloader()))
    assert sequences.dtype == torch.int64 and sequences.shape == (4, 64) and labels.eq(0).all()
    assert 0 <= int(sequences.min()) and int(sequences.max()) <= 255
    assert decode_bytes(dm.splits["val"].sequences[0].numpy())[0].isupper()  # a sequence starts with a document


def test_fortune_files_are_read_entry_by_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "fortunes"
    folder.mkdir()
    (folder / "wisdom").write_text("A penny saved.\n%\nLook before\nyou leap.\n%\n")
    (folder / "wisdom.dat").write_bytes(b"\x00\x01binary index")
    assert read_fortune_file(folder / "wisdom") == ["A penny saved.", "Look before\nyou leap."]
    monkeypatch.setattr(text_module, "FORTUNES_DIR", folder)
    dm = TextDataModule(name="fortunes", offline="debian_fortunes", val_size=1, test_size=1, data_dir=str(tmp_path / "data"))
    with pytest.raises(UserError, match="leave nothing to train on"):  # two fortunes cannot make three splits
        dm.prepare_data()
    (folder / "more").write_text("\n%\n".join(f"Fortune number {n}." for n in range(10)))
    dm.prepare_data()
    assert dm.source_record["kind"] == "offline" and "2 files" in dm.source_record["source"]


def test_missing_fortunes_say_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_module, "FORTUNES_DIR", tmp_path / "none")
    dm = TextDataModule(name="fortunes", offline="debian_fortunes", data_dir=str(tmp_path / "data"), how_to_fix="run `make data-fortunes`")
    with pytest.raises(UserError, match=r"make data-fortunes\).*run `make data-fortunes`"):
        dm.prepare_data()


def test_a_text_file_is_split_by_paragraph_and_no_paragraph_lands_in_two_splits(tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(f"Paragraph {n} says " + "more " * (n % 7) + "end" for n in range(40)), encoding="utf-8")
    dm = TextDataModule(name="book", path=str(path), seq_length=24, val_size=4, test_size=4, data_dir=str(tmp_path / "data"))
    dm.prepare_data()
    dm.setup()
    assert dm.source_record["kind"] == "local"
    numbers = {}
    for split in ("train", "val", "test"):
        text = " ".join(decode_bytes(row.numpy()) for row in dm.splits[split].sequences)
        numbers[split] = {int(n) for n in re.findall(r"Paragraph (\d+)", text)}
    assert len(numbers["val"]) == len(numbers["test"]) == 4 and len(numbers["train"]) == 32
    assert not numbers["train"] & numbers["val"] and not numbers["train"] & numbers["test"] and not numbers["val"] & numbers["test"]


@pytest.mark.parametrize("problem", ["missing", "binary", "empty"])
def test_bad_text_input_is_a_one_line_user_error(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "in.txt"
    if problem == "binary":
        path.write_bytes(b"\xff\xfe\x00bad")
    elif problem == "empty":
        path.write_text("\n\n  \n")
    dm = TextDataModule(name="bad", path=str(path), data_dir=str(tmp_path / "data"))
    with pytest.raises(UserError) as caught:
        dm.prepare_data()
    assert "\n" not in str(caught.value)
    assert {"missing": "does not exist", "binary": "cannot read", "empty": "holds no text"}[problem] in str(caught.value)


def test_a_data_module_refuses_another_modality() -> None:
    with pytest.raises(UserError, match="sets modality=image, but TextDataModule serves text"):
        TextDataModule(name="x", modality="image")


def test_a_local_hub_folder_with_a_text_column_keeps_its_validation_split_as_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "hub"
    folder.mkdir()
    for split, count in (("train", 30), ("validation", 6)):
        datasets.Dataset.from_dict({"story": [f"{split} story {n}." for n in range(count)] + [""]}).to_parquet(str(folder / f"{split}.parquet"))
    dm = TextDataModule(name="stories", hub_id=str(folder), text_column="story", seq_length=32, val_size=4, test_size=5, data_dir=str(tmp_path / "data"))
    dm.prepare_data()
    dm.setup()
    assert dm.source_record["kind"] == "hub"
    test_text = " ".join(decode_bytes(row.numpy()) for row in dm.splits["test"].sequences)
    assert test_text.count("validation story") == 5 and "train story" not in test_text  # empty documents dropped
    wrong = TextDataModule(name="wrong", hub_id=str(folder), text_column="text", data_dir=str(tmp_path / "data"))
    with pytest.raises(UserError, match=r"has columns \['story'\], not \['text'\]; set data.text_column"):
        wrong.prepare_data()
