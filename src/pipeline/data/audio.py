"""Audio: the data module, its dataset and its sources (hub, espeak-ng digits, WAV folders, synthetic tones).

Decoding is ``soundfile`` (libsndfile: WAV, FLAC, OGG) and resampling ``soxr``; the hub path
reads the raw bytes of an audio column (``datasets.Audio(decode=False)``) so neither FFmpeg nor
torchcodec is needed. Every clip becomes ``clip_length`` samples (end trimmed or zero-padded),
peak-normalised unless told otherwise, stored as float32 ``(1, T)``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr
import torch
from torch.utils.data import Dataset

from pipeline.data.datamodule import DataModule
from pipeline.data.sources import RawData, SourceUnavailable, class_names, load_hub_splits, media_file
from pipeline.detect import AUDIO_SUFFIXES
from pipeline.errors import UserError, one_line

ESPEAK_DIGITS = "spoken_digits_espeak"  # under data_dir: what `make data-spoken-digits` writes
SYNTHETIC_MARKER = "SYNTHETIC"  # first word of a folder's README.md when its audio is synthetic
PEAK = 0.95


def decode_audio(source: str | Path | bytes, sample_rate: int) -> np.ndarray:
    """A file or encoded bytes -> float32 mono at ``sample_rate`` (channels averaged)."""
    try:
        audio, rate = soundfile.read(io.BytesIO(source) if isinstance(source, bytes) else str(source), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        name = "audio bytes" if isinstance(source, bytes) else str(source)
        raise UserError(f"cannot read audio {name}: {one_line(err)}") from err
    mono = audio.mean(axis=1)
    return mono if rate == sample_rate else soxr.resample(mono, rate, sample_rate).astype(np.float32)


def fix_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Trim the end or zero-pad the end to ``length`` samples."""
    out = np.zeros(length, dtype=np.float32)
    out[: min(length, len(audio))] = audio[:length]
    return out


def read_audio_folder(directory: Path, sample_rate: int) -> RawData:
    """One subfolder per class with audio files inside; labels follow the sorted folder names."""
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{directory} has no class subfolders (expected DIR/<class>/<audio files>)")
    clips, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((directory / name).iterdir()):
            if file.suffix.lower() in AUDIO_SUFFIXES:
                clips.append(decode_audio(file, sample_rate))
                labels.append(label)
    if not clips:
        raise UserError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) under {directory}/<class>/")
    synthetic = (directory / "README.md").is_file() and (directory / "README.md").read_text().startswith(SYNTHETIC_MARKER)
    kind = "SYNTHETIC spoken digits (espeak-ng), not human speech, from" if synthetic else "audio folder"
    return RawData({"train": (clips, np.asarray(labels, dtype=np.int64))}, f"{kind} {directory}", classes)


def load_hub_audio(hub_id: str, audio_column: str, label_column: str, cache_dir: Path, timeout: float, sample_rate: int) -> RawData:
    """Clips and labels per split of a hub dataset, decoded here from the stored bytes (no FFmpeg, no torchcodec);
    a local table's audio column may name audio files instead."""
    import datasets

    splits = load_hub_splits(hub_id, {audio_column: "audio_column", label_column: "label_column"}, cache_dir, timeout)
    raw = {}
    for name, split in splits.items():
        if isinstance(split.features[audio_column], datasets.Value):  # file names in a local table
            clips = [decode_audio(media_file(name, hub_id), sample_rate) for name in split[audio_column]]
        else:
            stored = split.cast_column(audio_column, datasets.Audio(decode=False))[audio_column]
            clips = [decode_audio(item["bytes"] or item["path"], sample_rate) for item in stored]
        raw[name] = (clips, np.asarray(split[label_column], dtype=np.int64))
    return RawData(raw, f"Hugging Face dataset {hub_id}", class_names(splits["train"], label_column))


def make_synthetic_audio(sample_rate: int, length: int, per_class: int, seed: int) -> RawData:
    """Ten classes of short sounds for tests and smoke runs: tones at ten pitches (even classes pure,
    odd classes with a noise burst on top), random onset, duration and loudness."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for label in range(10):
        frequency = 150.0 * 1.35**label
        for _ in range(per_class):
            duration = int(rng.uniform(0.3, 0.8) * length)
            onset = int(rng.integers(0, length - duration + 1))
            t = np.arange(duration) / sample_rate
            sound = np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi)) * np.hanning(duration)
            if label % 2:
                sound += 0.5 * rng.standard_normal(duration) * np.hanning(duration)
            clip = np.zeros(length, dtype=np.float32)
            clip[onset : onset + duration] = rng.uniform(0.3, 0.9) * sound / np.abs(sound).max()
            clips.append(clip)
            labels.append(label)
    order = rng.permutation(len(clips))
    return RawData({"train": ([clips[i] for i in order], np.asarray(labels, dtype=np.int64)[order])},
                   f"synthetic tones and noise bursts ({sample_rate} Hz, {length} samples, generated)", [f"{150.0 * 1.35**k:.0f} Hz" for k in range(10)])


class AudioTensorDataset(Dataset):
    """float32 clips ``(N, 1, T)`` in [-1, 1] held in memory, served with int64 labels."""

    def __init__(self, clips: torch.Tensor, labels: torch.Tensor) -> None:
        self.clips, self.labels = clips, labels

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, index: int | slice) -> torch.Tensor:
        """Examples as the tokenizer takes them: float clips ``(1, T)``."""
        return self.clips[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs(index), self.labels[index]


class AudioDataModule(DataModule):
    """Mono clips ``(B, 1, T)`` in [-1, 1] with int64 labels.

    Args (besides :class:`DataModule`'s):
        audio_column: the hub dataset's audio column (read as bytes and decoded with soundfile).
        sample_rate: every clip is resampled to it (soxr).
        clip_length: samples per clip; longer clips lose their end, shorter ones are zero-padded.
        peak_normalize: scale each clip so its peak is 0.95 (recordings differ a lot in loudness).
        synthetic_per_class: clips per class of the synthetic source.
    """

    column = "audio"

    def __init__(
        self,
        name: str,
        modality: str = "audio",
        hub_id: str | None = None,
        audio_column: str = "audio",
        label_column: str = "label",
        offline: str | None = None,
        path: str | None = None,
        sample_rate: int = 8000,
        clip_length: int = 8192,
        peak_normalize: bool = True,
        num_classes: int = 10,
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: int = 300,
        test_size: int = 300,
        synthetic_per_class: int = 50,
        hub_timeout: float = 5.0,
        seed: int = 0,
        data_dir: str = "data",
        how_to_fix: str = "point data.path at a folder of WAV files with one subfolder per class",
        shuffle: bool = True,
    ) -> None:
        super().__init__(
            name, modality, hub_id, label_column, offline, path, num_classes, batch_size, num_workers, val_size, test_size,
            hub_timeout, seed, data_dir, how_to_fix,
            spec=dict(audio_column=audio_column, sample_rate=sample_rate, clip_length=clip_length, peak_normalize=peak_normalize,
                      synthetic_per_class=synthetic_per_class),
            shuffle=shuffle,
        )

    def sources(self) -> list[tuple[str, Callable[[], RawData]]]:
        spec, rate = self.spec, self.spec["sample_rate"]
        if spec["path"]:
            return [("local", lambda: read_local_audio(Path(spec["path"]), rate))]
        candidates: list[tuple[str, Callable[[], RawData]]] = []
        if spec["hub_id"]:
            candidates.append(("hub", lambda: load_hub_audio(spec["hub_id"], spec["audio_column"], spec["label_column"], self.data_dir / ".hf_cache", spec["hub_timeout"], rate)))
        offline = spec["offline"]
        if offline == "synthetic":
            candidates.append(("generated", lambda: make_synthetic_audio(rate, spec["clip_length"], spec["synthetic_per_class"], spec["seed"])))
        elif offline == "espeak_spoken_digits":
            candidates.append(("offline", lambda: load_espeak_digits(self.data_dir / ESPEAK_DIGITS, rate)))
        elif offline:
            raise UserError(f"unknown data.offline source {offline!r} for audio; valid: synthetic, espeak_spoken_digits")
        return candidates

    def to_examples(self, items: Any, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        clips = np.stack([fix_length(np.asarray(clip, dtype=np.float32), self.spec["clip_length"]) for clip in items])
        if self.spec["peak_normalize"]:
            clips *= PEAK / np.maximum(np.abs(clips).max(axis=1, keepdims=True), 1e-4)
        return np.clip(clips, -1.0, 1.0)[:, None, :], labels

    def dataset(self, examples: torch.Tensor, labels: torch.Tensor, split: str) -> AudioTensorDataset:
        return AudioTensorDataset(examples, labels)


def read_local_audio(path: Path, sample_rate: int) -> RawData:
    if not path.is_dir():
        raise UserError(f"data.path {path} does not exist or is not a folder (expected DIR/<class>/<audio files>)")
    return read_audio_folder(path, sample_rate)


def load_espeak_digits(directory: Path, sample_rate: int) -> RawData:
    """The set ``make data-spoken-digits`` synthesises with espeak-ng (SYNTHETIC speech, and said so)."""
    if not directory.is_dir():
        raise SourceUnavailable(f"{directory} missing (make it with: make data-spoken-digits)")
    return read_audio_folder(directory, sample_rate)
