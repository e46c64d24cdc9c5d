"""A small reference classifier, trained once per data set on its real train split.

Its penultimate features feed the classifier Frechet distance and its predictions score
class-conditional samples. It takes examples as the data modules serve them (floats in [-1, 1]):
images directly, audio clips through a log-mel front end (``frontend="logmel"``), so one conv
net serves both. ``classifier.pt`` holds plain tensors and a plain-dict config, so it loads with
``weights_only=True``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UserError, one_line
from pipeline.fileio import write_json
from pipeline.logmel import LogMel
from pipeline.weights_file import read_weights_file, write_weights_file

FORMAT = "pipeline.classifier/1"
RECIPE = 2  # training recipe; a cached classifier of another recipe is trained again (2: audio noise-floor augmentation)
log = logging.getLogger("pipeline.evaluation")


FRONTENDS = ("image", "logmel")
MAX_TIME_SHIFT = 0.1  # audio augmentation: clips move by up to this share of their length
NOISE_FLOOR = (1e-4, 3e-2)  # audio augmentation: white noise of an amplitude log-uniform in this range (-80 to -30 dBFS)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> float in [-1, 1], as the DataModule serves them."""
    return images.float() / 127.5 - 1.0


def _block(c_in: int, c_out: int, dims: int) -> nn.Sequential:
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv1d, nn.BatchNorm1d)
    return nn.Sequential(conv(c_in, c_out, 3, padding=1, bias=False), norm(c_out), nn.ReLU(inplace=True))


class ReferenceClassifier(nn.Module):
    """Conv blocks of width, 2*width and twice 4*width with two 2x poolings, global average pool, an MLP head.

    ``frontend="image"``: inputs are float images ``(B, C, H, W)`` in [-1, 1], at least 8x8; 2-D convs.
    ``frontend="logmel"``: inputs are clips ``(B, 1, T)`` in [-1, 1], seen as log-mel spectrograms
    (64 mels, hop 128 at ``sample_rate``) whose mel bands are the channels of 1-D convs over time:
    a 2-D conv with global pooling cannot tell one pitch from another, a band-as-channel conv can.
    """

    def __init__(
        self, in_channels: int, num_classes: int, width: int = 32, num_features: int = 128, frontend: str = "image", sample_rate: int | None = None,
    ) -> None:
        super().__init__()
        if frontend not in FRONTENDS or (frontend == "logmel") != (sample_rate is not None):
            raise ValueError(f"frontend must be one of {FRONTENDS}, with sample_rate exactly for logmel (got {frontend!r}, {sample_rate})")
        self.config = dict(in_channels=in_channels, num_classes=num_classes, width=width, num_features=num_features, frontend=frontend, sample_rate=sample_rate)
        self.num_features = num_features
        self.log_mel = LogMel(sample_rate) if sample_rate is not None else None
        dims, bands = (1, self.log_mel.filters.shape[0]) if self.log_mel is not None else (2, in_channels)
        pool, global_pool = (nn.MaxPool2d, nn.AdaptiveAvgPool2d) if dims == 2 else (nn.MaxPool1d, nn.AdaptiveAvgPool1d)
        self.body = nn.Sequential(
            _block(bands, width, dims), pool(2),  # (B, w, H/2, W/2) or (B, w, frames/2)
            _block(width, 2 * width, dims), pool(2),  # (B, 2w, H/4, W/4)
            _block(2 * width, 4 * width, dims), _block(4 * width, 4 * width, dims),  # the second block lifts MNIST from ~94% to ~98%
            global_pool(1), nn.Flatten(),  # (B, 4w)
            nn.Linear(4 * width, num_features), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(num_features, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, num_features)``."""
        return self.body(self.log_mel(x) if self.log_mel is not None else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_classes) logits

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Training-time jitter: images shift by up to 2 pixels; clips move by up to a tenth of their
        length (circularly) and, half of them, get a faint noise floor.

        Without the noise, a classifier trained on clips padded with digital silence keys on that
        exact silence: white noise at -80 dBFS, inaudible, took one from 98% to 67% accuracy and
        -60 dBFS to 14%, so it could not score any decoded or generated clip.
        """
        if self.log_mel is None:
            return random_shift(x)
        limit = int(x.shape[-1] * MAX_TIME_SHIFT)
        shifts = torch.randint(-limit, limit + 1, (len(x),)).tolist()
        x = torch.stack([clip.roll(shift, dims=-1) for clip, shift in zip(x, shifts)])
        low, high = (math.log(a) for a in NOISE_FLOOR)
        amplitude = torch.exp(torch.empty(len(x), 1, 1).uniform_(low, high)) * (torch.rand(len(x), 1, 1) < 0.5)
        return (x + amplitude * torch.randn_like(x)).clamp(-1.0, 1.0)


def random_shift(x: torch.Tensor, pad: int = 2) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels each way (edge pixels repeat into the gap)."""
    _, _, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    shifts = torch.randint(0, 2 * pad + 1, (len(x), 2)).tolist()
    return torch.stack([padded[i, :, dy : dy + H, dx : dx + W] for i, (dy, dx) in enumerate(shifts)])


def train_classifier(
    train: Any, test: Any, num_classes: int, epochs: int = 4, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
    frontend: str = "image", sample_rate: int | None = None,
) -> tuple[ReferenceClassifier, dict[str, Any]]:
    """Train on ``train``, score on ``test`` (datasets with ``inputs(index)`` and ``labels``); the same
    seed gives the same weights. Returns a frozen model."""
    start = time.perf_counter()
    batch_size = min(batch_size, len(train))
    steps = len(train) // batch_size  # drop the ragged tail: BatchNorm needs more than one image
    with torch.random.fork_rng(devices=[]):  # seeds init, shuffling, shifts and dropout without touching the caller's RNG
        torch.manual_seed(seed)
        model = ReferenceClassifier(train.inputs(slice(0, 1)).shape[1], num_classes, frontend=frontend, sample_rate=sample_rate)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps)
        for _ in range(epochs):
            order = torch.randperm(len(train))[: steps * batch_size].view(steps, batch_size)
            for index in order:
                x = model.augment(train.inputs(index))
                loss = F.cross_entropy(model(x), train.labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    model.eval().requires_grad_(False)
    test_inputs = test.inputs(slice(None))
    record = {
        "test_accuracy": conditional_accuracy(model, test_inputs, test.labels),
        "train_examples": len(train), "test_examples": len(test), "epochs": epochs, "seed": seed, "recipe": RECIPE,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if frontend == "logmel":  # what the noise-floor augmentation buys: accuracy under -60 dBFS white noise
        noise = torch.randn(test_inputs.shape, generator=torch.Generator().manual_seed(seed))
        record["test_accuracy_noise_floor"] = conditional_accuracy(model, (test_inputs + 1e-3 * noise).clamp(-1.0, 1.0), test.labels)
    return model, record


@torch.no_grad()
def conditional_accuracy(classifier: ReferenceClassifier, examples: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Share of examples (floats in [-1, 1]) the classifier assigns to ``labels`` (how well samples follow their condition)."""
    device = next(classifier.parameters()).device
    classifier.eval()
    correct = sum(
        (classifier(x.to(device)).argmax(1) == y.to(device)).sum().item()
        for x, y in zip(examples.split(batch_size), labels.split(batch_size))
    )
    return correct / len(labels)


def save_classifier(model: ReferenceClassifier, record: dict[str, Any], path: str | Path) -> Path:
    """Write ``classifier.pt`` atomically; ``record`` must be plain (numbers, strings)."""
    return write_weights_file(path, {
        "format": FORMAT, "config": model.config, "record": record,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    })


def load_classifier(path: str | Path) -> tuple[ReferenceClassifier, dict[str, Any]]:
    """Load ``classifier.pt`` frozen, in eval mode; a missing, corrupt or foreign file raises :class:`UserError`."""
    payload = read_weights_file(path, (FORMAT,), "classifier", "stage=eval trains one and caches it")
    try:
        model = ReferenceClassifier(**payload["config"])
        model.load_state_dict(payload["state_dict"])
    except Exception as err:  # missing keys, wrong shapes, bad config
        raise UserError(f"{path} does not match its own config: {one_line(err, 200)}") from err
    model.eval().requires_grad_(False)
    return model, payload["record"]


def load_or_train_classifier(
    cache_dir: Path, train: Any, test: Any, num_classes: int, fingerprint: str, epochs: int = 4, seed: int = 0,
    frontend: str = "image", sample_rate: int | None = None,
) -> tuple[ReferenceClassifier, dict[str, Any]]:
    """The classifier cached under ``cache_dir/fingerprint/``, trained and cached there first if need be.

    ``fingerprint`` names the data (set, split, resolution); a cached file that cannot be read or was
    trained for other channels, classes, epochs, seed or recipe is trained again and replaced.
    """
    path = Path(cache_dir) / fingerprint / "classifier.pt"
    wanted = {
        "in_channels": train.inputs(slice(0, 1)).shape[1], "num_classes": num_classes, "epochs": epochs, "seed": seed,
        "frontend": frontend, "sample_rate": sample_rate, "recipe": RECIPE,
    }
    if path.is_file():
        try:
            model, record = load_classifier(path)
            found = {**model.config, **record}
            if all(found.get(k) == v for k, v in wanted.items()):
                log.info("reference classifier: cached %s (test accuracy %.4f)", path, record["test_accuracy"])
                return model, {**record, "cached": True, "path": str(path)}
            log.info("reference classifier: %s was trained with other settings; training again", path)
        except UserError as err:
            log.warning("reference classifier: %s; training again", err)
    model, record = train_classifier(train, test, num_classes, epochs=epochs, seed=seed, frontend=frontend, sample_rate=sample_rate)
    save_classifier(model, record, path)
    write_json(path.with_suffix(".json"), record)
    log.info("reference classifier: trained in %.0fs, test accuracy %.4f, saved to %s", record["seconds"], record["test_accuracy"], path)
    return model, {**record, "cached": False, "path": str(path)}
