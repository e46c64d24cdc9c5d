"""Log-mel spectrograms in plain torch (``torch.stft`` and a triangular filterbank): no torchaudio.

Used by the audio reconstruction metric (``val/mel_l1``), the spectrogram images of the audio
media writer and the audio reference classifier.
"""

from __future__ import annotations

import torch
from torch import nn


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters evenly spaced on the HTK mel scale, 0 Hz to Nyquist."""
    def to_mel(hz: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)

    edges_mel = torch.linspace(0.0, float(to_mel(torch.tensor(sample_rate / 2.0))), n_mels + 2)
    edges_hz = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    bins = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class LogMel(nn.Module):
    """Waveforms ``(B, 1, T)`` -> log-mel spectrograms ``(B, n_mels, frames)``."""

    def __init__(self, sample_rate: int, n_fft: int = 512, hop_length: int = 128, n_mels: int = 64) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio.flatten(0, 1).float(), self.n_fft, self.hop_length, window=self.window, return_complex=True).abs()
        return torch.log(self.filters @ spec.pow(2) + 1e-5).view(*audio.shape[:-2], -1, spec.shape[-1])
