"""Frechet distances between real and generated examples: in the reference classifier's features, and true FID for images."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from pipeline.evaluation.classifier import ReferenceClassifier


class ClassifierFeatures(nn.Module):
    """The classifier's penultimate features of examples (floats in [-1, 1]), as a torchmetrics feature extractor."""

    def __init__(self, classifier: ReferenceClassifier) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_features = classifier.num_features  # torchmetrics sizes its statistics from this

    def train(self, mode: bool = True) -> ClassifierFeatures:
        return super().train(False)  # a parent's .train() must not switch on dropout or BatchNorm updates

    @torch.no_grad()
    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(examples)  # (B, num_features)


def _frechet(metric: FrechetInceptionDistance, real: torch.Tensor, fake: torch.Tensor, batch_size: int) -> float:
    device = metric.device
    for examples, is_real in ((real, True), (fake, False)):
        for batch in examples.split(batch_size):
            metric.update(batch.to(device), real=is_real)
    return float(metric.compute())


def classifier_frechet_distance(
    classifier: ReferenceClassifier, real: torch.Tensor, fake: torch.Tensor, batch_size: int = 256,
) -> float:
    """Frechet distance between Gaussians fitted to the reference classifier's features of two sets of examples (floats in [-1, 1]).

    This is a *classifier Frechet distance*, not FID: the features come from our own small
    classifier, not Inception-v3, so values are comparable only with the same classifier. Like
    FID the estimate is biased by the sample count, so compare runs at equal counts only.
    """
    device = next(classifier.parameters()).device
    metric = FrechetInceptionDistance(feature=ClassifierFeatures(classifier)).to(device)
    return _frechet(metric, real, fake, batch_size)


def true_fid(
    real_uint8: torch.Tensor, fake_uint8: torch.Tensor, weights_path: str | Path | None, batch_size: int = 64,
) -> tuple[float | None, str]:
    """Inception-v3 FID when the optional torch-fidelity package and a local weights file are both there.

    Returns ``(fid, note)``, or ``(None, why it was skipped)``. Never downloads anything. Runs on
    the device of ``real_uint8``; grayscale images are repeated to three channels.
    """
    problems = []
    if importlib.util.find_spec("torch_fidelity") is None:
        problems.append("torch-fidelity is not installed (pip install torch-fidelity)")
    if weights_path is None:
        problems.append("no Inception weights file was given (eval.inception_weights: torch-fidelity's weights-inception-2015-12-05-6726825d.pth)")
    elif not Path(weights_path).is_file():
        problems.append(f"Inception weights file {weights_path} not found")
    if problems:
        return None, "true FID skipped: " + "; ".join(problems)
    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights_path), normalize=False)
    rgb = [x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x for x in (real_uint8, fake_uint8)]  # (N, 3, H, W)
    fid = _frechet(metric.to(real_uint8.device), *rgb, batch_size)
    return fid, f"Inception-v3 FID over {len(real_uint8)} real and {len(fake_uint8)} generated images"
