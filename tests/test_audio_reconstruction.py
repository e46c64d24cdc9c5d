"""The audio reconstruction objective: its loss terms and how the log floor treats faint noise."""

from __future__ import annotations

import pytest
import torch

from pipeline.tokenizer import AudioReconstruction


def test_the_audio_loss_terms_and_the_log_floor() -> None:
    """Identical clips cost nothing; a faint noise floor over digital silence costs far less above a higher log floor."""
    t = torch.arange(4096) / 8000
    clip = torch.zeros(1, 1, 4096)
    clip[..., :2048] = 0.5 * torch.sin(2 * torch.pi * 440 * t[:2048])
    noisy = clip + 1e-4 * torch.randn_like(clip)
    strict, tolerant = AudioReconstruction(8000, mel_weight=1.0), AudioReconstruction(8000, mel_weight=1.0, log_floor=1e-2)
    same = strict.loss(clip, clip)
    assert same["rec_loss"].item() == pytest.approx(0.0, abs=1e-6) and set(same) == {"rec_loss", "l1", "stft", "mel"}
    assert tolerant.loss(noisy, clip)["stft"] < 0.2 * strict.loss(noisy, clip)["stft"]
