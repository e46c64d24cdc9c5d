"""Audio: one WAV per clip and a grid of log-mel spectrograms on disk; W&B audio and the spectrogram image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import torch
from lightning.pytorch.loggers import WandbLogger

from pipeline.fileio import atomic_write
from pipeline.logmel import LogMel
from pipeline.media.base import Media
from pipeline.media.image import image_grid, save_png

MAX_LOGGED_CLIPS = 16  # W&B audio players per log call: enough to listen to, small enough to load


def save_wav(audio: np.ndarray, sample_rate: int, path: str | Path) -> Path:
    """A mono float clip in [-1, 1] as 16-bit PCM WAV, written atomically."""
    clip = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return atomic_write(path, lambda handle: soundfile.write(handle, clip, sample_rate, format="WAV", subtype="PCM_16"))


def spectrogram_tiles(rows: list[torch.Tensor], log_mel: LogMel) -> list[torch.Tensor]:
    """Rows of clips ``(N, 1, T)`` -> rows of log-mel images ``(N, 1, mels, frames)`` in [-1, 1], low
    frequencies at the bottom, on one shared scale (the loudest 80 dB of the whole grid) so rows compare."""
    specs = [log_mel(row.float().cpu()).flip(-2).unsqueeze(1) if len(row) else None for row in rows]
    shape = next(s.shape[1:] for s in specs if s is not None)
    specs = [s if s is not None else torch.empty(0, *shape) for s in specs]  # an empty row (a class nobody drew) stays empty
    top = max(float(s.max()) for s in specs if len(s))
    floor = top - 80.0 / 10.0 * np.log(10.0)  # 80 dB below the peak, in natural-log power
    return [((s.clamp(min=floor) - floor) / (top - floor) * 2.0 - 1.0) for s in specs]


class AudioMedia(Media):
    """Rows of clips -> ``stem.png`` (spectrograms, one row per row) and ``stem/<row>_<i>.wav``; W&B audio.

    ``samples.npz`` keys: ``audio`` (N x T float32) and ``sample_rate``.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.log_mel = LogMel(sample_rate)

    def save_rows(self, rows: list[torch.Tensor], names: list[str], stem: Path) -> list[Path]:
        grid = save_png(image_grid(spectrogram_tiles(rows, self.log_mel)), stem.with_suffix(".png"))
        wavs = [
            save_wav(clip.cpu().numpy(), self.sample_rate, stem / f"{_slug(name)}_{i:03d}.wav")
            for row, name in zip(rows, names) for i, clip in enumerate(row)
        ]
        return [grid, *wavs]

    def log(self, logger: WandbLogger, key: str, rows: list[torch.Tensor], names: list[str], files: list[Path], step: int | None, caption: str) -> None:
        logger.log_image(f"{key}_spectrograms", [str(files[0])], step=step, caption=[f"{caption}; rows: {', '.join(names)}"])
        per_row = max(1, MAX_LOGGED_CLIPS // max(len(rows), 1))
        clips = [(clip, f"{name} {i}") for row, name in zip(rows, names) for i, clip in enumerate(row[:per_row])]
        logger.log_audio(
            key, [clip.float().cpu().numpy().reshape(-1) for clip, _ in clips], step=step,
            sample_rate=[self.sample_rate] * len(clips), caption=[label for _, label in clips],
        )

    def arrays(self, examples: torch.Tensor) -> dict[str, np.ndarray]:
        return {"audio": examples.float().cpu().numpy().reshape(len(examples), -1), "sample_rate": np.asarray(self.sample_rate, dtype=np.int64)}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip()) or "row"
