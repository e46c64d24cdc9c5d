"""What "a good reconstruction" means per modality: the training loss and the validation metrics.

The VQ-VAE is the same for every modality; it asks one of these for ``loss(output, target)``
(a dict whose ``rec_loss`` is what it minimises) and for a fresh set of metrics to update with
``update(metrics, output, target)``. ``output`` is the decoder's raw output: images or waveforms
in [-1, 1], byte logits for text. Each keeps its plain keyword arguments in ``self.config`` so a
tokenizer file can rebuild it by class name (:data:`RECONSTRUCTIONS`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.audio import ScaleInvariantSignalDistortionRatio
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from pipeline.logmel import LogMel


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped: image metrics are reported on the [0, 1] data range."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


class ImageReconstruction(nn.Module):
    """L1 + MSE on pixels; PSNR and SSIM on the [0, 1] range."""

    def __init__(self, l1_weight: float = 1.0, mse_weight: float = 1.0) -> None:
        super().__init__()
        self.l1_weight, self.mse_weight = l1_weight, mse_weight
        self.config = dict(l1_weight=l1_weight, mse_weight=mse_weight)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"rec_loss": self.l1_weight * F.l1_loss(output, target) + self.mse_weight * F.mse_loss(output, target)}

    def metrics(self) -> MetricCollection:
        return MetricCollection({"psnr": PeakSignalNoiseRatio(data_range=1.0), "ssim": StructuralSimilarityIndexMeasure(data_range=1.0)})

    def update(self, metrics: MetricCollection, output: torch.Tensor, target: torch.Tensor) -> None:
        metrics.update(_to_unit(output), _to_unit(target))


def stft_loss(output: torch.Tensor, target: torch.Tensor, resolutions: tuple[int, ...], log_floor: float = 1e-5) -> torch.Tensor:
    """Multi-resolution STFT loss: spectral convergence + L1 of ``log(magnitude + log_floor)``, averaged over FFT sizes."""
    out, tgt = output.flatten(0, 1), target.flatten(0, 1)
    total = out.new_zeros(())
    for n_fft in resolutions:
        window = torch.hann_window(n_fft, device=out.device)
        mag_out = torch.stft(out, n_fft, n_fft // 4, window=window, return_complex=True).abs()
        mag_tgt = torch.stft(tgt, n_fft, n_fft // 4, window=window, return_complex=True).abs()
        convergence = torch.linalg.norm(mag_tgt - mag_out) / torch.linalg.norm(mag_tgt).clamp_min(1e-7)
        total = total + convergence + F.l1_loss(torch.log(mag_out + log_floor), torch.log(mag_tgt + log_floor))
    return total / len(resolutions)


class AudioReconstruction(nn.Module):
    """A multi-resolution STFT loss + log-mel L1 (the mel scale spends the loss where hearing, and
    the log-mel reference classifier, look, as in HiFi-GAN and DAC) + optionally L1 on the waveform;
    SI-SDR (torchmetrics) and log-mel L1 as metrics.

    ``log_floor`` is added to STFT magnitudes before the log: at 1e-5, a faint noise floor over the
    digital silence that pads short clips costs as much as a wrong formant, and the decoder learns to
    be quiet everywhere. The waveform L1 does the same wherever the phase is uncertain, so the audio
    modality config turns it off (small tokenizer, log-mel weight 1, 5 minutes of training: reference-classifier accuracy
    on reconstructions 0.33 with it at floor 1e-5, 0.39 without, 0.55 without at floor 1e-2).
    """

    def __init__(
        self, sample_rate: int, l1_weight: float = 1.0, stft_weight: float = 1.0, mel_weight: float = 0.0,
        resolutions: tuple[int, ...] = (128, 256, 512, 1024), log_floor: float = 1e-5,
    ) -> None:
        super().__init__()
        self.l1_weight, self.stft_weight, self.mel_weight, self.resolutions = l1_weight, stft_weight, mel_weight, tuple(resolutions)
        self.log_floor = log_floor
        self.log_mel = LogMel(sample_rate)
        self.config = dict(
            sample_rate=sample_rate, l1_weight=l1_weight, stft_weight=stft_weight, mel_weight=mel_weight, resolutions=list(resolutions), log_floor=log_floor,
        )

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        l1, stft = F.l1_loss(output, target), stft_loss(output, target, self.resolutions, self.log_floor)
        mel = F.l1_loss(self.log_mel(output), self.log_mel(target))
        return {"rec_loss": self.l1_weight * l1 + self.stft_weight * stft + self.mel_weight * mel, "l1": l1, "stft": stft, "mel": mel}

    def metrics(self) -> MetricCollection:
        return MetricCollection({"si_sdr": ScaleInvariantSignalDistortionRatio(), "mel_l1": MeanMetric()})

    def update(self, metrics: MetricCollection, output: torch.Tensor, target: torch.Tensor) -> None:
        metrics["si_sdr"].update(output.float(), target.float())
        metrics["mel_l1"].update((self.log_mel(output) - self.log_mel(target)).abs().mean(dim=(1, 2)))


class TextReconstruction(nn.Module):
    """Cross-entropy of the byte logits; byte accuracy of the argmax reconstruction, padding (byte 0) excluded."""

    def __init__(self, vocab_size: int = 256, pad: int = 0) -> None:
        super().__init__()
        self.vocab_size, self.pad = vocab_size, pad
        self.config = dict(vocab_size=vocab_size, pad=pad)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(output, target)
        return {"rec_loss": ce, "bits_per_byte": ce / math.log(2)}

    def metrics(self) -> MetricCollection:
        return MetricCollection({"byte_accuracy": MulticlassAccuracy(self.vocab_size, average="micro", ignore_index=self.pad)})

    def update(self, metrics: MetricCollection, output: torch.Tensor, target: torch.Tensor) -> None:
        metrics.update(output.argmax(dim=1), target)


RECONSTRUCTIONS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (ImageReconstruction, AudioReconstruction, TextReconstruction)}
