"""The evaluation package: reference classifier, its file, its cache, classifier Frechet distance, true FID's skip path.

One small classifier is trained once per module on procedurally drawn shapes (16x16, a few seconds on CPU).
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.data import AudioTensorDataset, ImageTensorDataset
from pipeline.data.audio import make_synthetic_audio
from pipeline.data.synthetic import make_synthetic_images
from pipeline.errors import UserError
from pipeline.evaluation import (
    ClassifierFeatures,
    ReferenceClassifier,
    classifier_frechet_distance,
    conditional_accuracy,
    load_classifier,
    load_or_train_classifier,
    save_classifier,
    train_classifier,
    true_fid,
)
from pipeline.evaluation.classifier import NOISE_FLOOR, RECIPE


def shapes(per_class: int, seed: int, size: int = 16, channels: int = 1) -> ImageTensorDataset:
    images, labels = make_synthetic_images(size, channels, per_class, seed).splits["train"]
    images = torch.from_numpy(images)
    images = images.unsqueeze(1) if channels == 1 else images.permute(0, 3, 1, 2)  # (N, C, H, W)
    return ImageTensorDataset(images.contiguous(), torch.from_numpy(labels))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and OpenMP spin-waits make them crawl on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> tuple[ImageTensorDataset, ImageTensorDataset]:
    return shapes(per_class=30, seed=0), shapes(per_class=10, seed=1)


@pytest.fixture(scope="module")
def trained(data: tuple[ImageTensorDataset, ImageTensorDataset]) -> tuple[ReferenceClassifier, dict]:
    return train_classifier(*data, num_classes=10, epochs=8, batch_size=32, seed=0)


def tiny_train(data: tuple[ImageTensorDataset, ImageTensorDataset], seed: int) -> ReferenceClassifier:
    return train_classifier(*data, num_classes=10, epochs=1, batch_size=32, seed=seed)[0]


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (1, 8)])
def test_shapes_and_config(channels: int, size: int) -> None:
    model = ReferenceClassifier(channels, num_classes=7, width=8, num_features=24).eval()
    x = torch.rand(5, channels, size, size) * 2 - 1
    assert model.features(x).shape == (5, 24)
    assert model(x).shape == (5, 7)
    assert model.num_features == 24
    assert model.config == {"in_channels": channels, "num_classes": 7, "width": 8, "num_features": 24, "frontend": "image", "sample_rate": None}
    assert ClassifierFeatures(model)(x).shape == (5, 24)


def test_training_reaches_high_accuracy(trained: tuple[ReferenceClassifier, dict], data) -> None:
    model, record = trained
    assert record["test_accuracy"] >= 0.9, record
    assert record["train_examples"] == len(data[0]) and record["test_examples"] == len(data[1])
    assert record["epochs"] == 8 and record["seconds"] > 0
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_training_is_deterministic_and_leaves_the_global_rng_alone(data) -> None:
    torch.manual_seed(123)
    first = tiny_train(data, seed=3)
    after = torch.rand(3)
    torch.manual_seed(123)
    second = tiny_train(data, seed=3)
    assert torch.equal(after, torch.rand(3))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    other = tiny_train(data, seed=4)
    assert not torch.equal(first.head[1].weight, other.head[1].weight)


def test_round_trip_reproduces_outputs(tmp_path: Path, trained) -> None:
    model, record = trained
    path = save_classifier(model, record, tmp_path / "classifier.pt")
    payload = torch.load(path, weights_only=True)  # plain tensors and dicts only
    assert payload["format"] == "pipeline.classifier/1" and payload["config"] == model.config
    loaded, loaded_record = load_classifier(path)
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    assert torch.equal(model(x), loaded(x))
    assert loaded_record == record
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="classifier file not found"):
        load_classifier(tmp_path / "nope.pt")


def test_truncated_file(tmp_path: Path) -> None:
    path = save_classifier(ReferenceClassifier(1, 10, width=4, num_features=8), {}, tmp_path / "classifier.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match="cannot read classifier file") as err:
        load_classifier(path)
    assert "\n" not in str(err.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):  # noqa: ANN204 - pickle protocol
            return (print, ("pwned",))

    torch.save({"format": "pipeline.classifier/1", "config": Payload()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(UserError, match="cannot read classifier file"):
        load_classifier(path)


@pytest.mark.parametrize("payload", [{"state_dict": {}}, {"format": "pipeline.tokenizer/1"}, [1, 2]])
def test_foreign_file(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(UserError, match="not a pipeline classifier file"):
        load_classifier(path)


def test_file_that_contradicts_its_config(tmp_path: Path) -> None:
    path = save_classifier(ReferenceClassifier(1, 10, width=4, num_features=8), {}, tmp_path / "classifier.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["width"] = 8
    torch.save(payload, path)
    with pytest.raises(UserError, match="does not match its own config") as err:
        load_classifier(path)
    assert "\n" not in str(err.value)


def test_load_or_train_caches(tmp_path: Path, data, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    model, record = load_or_train_classifier(tmp_path, *data, num_classes=10, fingerprint="shapes-16", epochs=1)
    assert record["cached"] is False
    assert (tmp_path / "shapes-16" / "classifier.pt").is_file() and (tmp_path / "shapes-16" / "classifier.json").is_file()
    assert "trained" in caplog.text and "test accuracy" in caplog.text
    caplog.clear()
    again, cached_record = load_or_train_classifier(tmp_path, *data, num_classes=10, fingerprint="shapes-16", epochs=1)
    assert cached_record == {**record, "cached": True}
    assert "cached" in caplog.text
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    assert torch.equal(model(x), again(x))


def test_load_or_train_replaces_a_corrupt_or_stale_cache(tmp_path: Path, data) -> None:
    path = tmp_path / "shapes-16" / "classifier.pt"
    path.parent.mkdir()
    path.write_bytes(b"not a checkpoint")
    _, record = load_or_train_classifier(tmp_path, *data, num_classes=10, fingerprint="shapes-16", epochs=1)
    assert record["cached"] is False
    load_classifier(path)  # replaced by a readable file
    _, record = load_or_train_classifier(tmp_path, *data, num_classes=10, fingerprint="shapes-16", epochs=1, seed=1)
    assert record["cached"] is False  # other seed: trained again


def test_features_stay_in_eval_mode(trained) -> None:
    model, _ = trained
    features = ClassifierFeatures(model)
    parent = nn.Sequential(features).train()
    assert not features.training and not model.training
    images = torch.rand(8, 1, 16, 16) * 2 - 1
    before = model.body[0][1].running_mean.clone()
    out = features(images)
    assert out.shape == (8, model.num_features) and features.num_features == model.num_features
    assert not out.requires_grad
    assert torch.equal(out, parent(images))  # no dropout, no batch statistics
    assert torch.equal(before, model.body[0][1].running_mean)


def test_classifier_frechet_distance(trained, data) -> None:
    model, _ = trained
    real = data[0].inputs(slice(None))
    same = classifier_frechet_distance(model, real, real)
    fresh = classifier_frechet_distance(model, real, shapes(per_class=30, seed=2).inputs(slice(None)))  # same distribution and count
    shifted = classifier_frechet_distance(model, real, real.roll(4, dims=-1))
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
    noised = [(real + s / 127.5 * noise).clamp(-1, 1) for s in (30, 90)]
    mild, strong = (classifier_frechet_distance(model, real, x) for x in noised)
    assert abs(same) < 1e-3 * fresh
    assert fresh < shifted and fresh < mild < strong
    assert classifier_frechet_distance(model, noised[1], real) == pytest.approx(strong, rel=1e-3)
    assert classifier_frechet_distance(model, real, real, batch_size=7) == pytest.approx(same, abs=1e-3 * fresh)


def test_conditional_accuracy(trained, data) -> None:
    model, _ = trained
    train = data[0]
    assert conditional_accuracy(model, train.inputs(slice(None)), train.labels) == 1.0
    shuffled = train.labels[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))]
    assert conditional_accuracy(model, train.inputs(slice(None)), shuffled, batch_size=64) < 0.25  # chance is 0.1


def test_true_fid_skips_without_weights(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8)
    fid, why = true_fid(images, images, None)
    assert fid is None and "true FID skipped" in why and "Inception weights" in why
    fid, why = true_fid(images, images, tmp_path / "pt_inception.pth")
    assert fid is None and "pt_inception.pth not found" in why and "\n" not in why


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed here")
def test_true_fid_skips_without_torch_fidelity(tmp_path: Path) -> None:
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"weights")
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    fid, why = true_fid(images, images, weights)
    assert fid is None and "torch-fidelity is not installed" in why and "not found" not in why


def tones(per_class: int, seed: int) -> AudioTensorDataset:
    clips, labels = make_synthetic_audio(8000, 2048, per_class, seed).splits["train"]
    return AudioTensorDataset(torch.from_numpy(np.stack(clips))[:, None], torch.from_numpy(labels))


def test_the_log_mel_classifier_learns_audio_classes_and_reloads(tmp_path: Path) -> None:
    train, test = tones(per_class=40, seed=0), tones(per_class=8, seed=1)
    model, record = load_or_train_classifier(tmp_path, train, test, num_classes=10, fingerprint="tones", epochs=12, seed=0, frontend="logmel", sample_rate=8000)
    assert record["test_accuracy"] >= 0.8 and record["cached"] is False, record
    assert model.config["frontend"] == "logmel" and model.features(test.inputs(slice(0, 3))).shape == (3, model.num_features)
    again, record = load_or_train_classifier(tmp_path, train, test, num_classes=10, fingerprint="tones", epochs=12, seed=0, frontend="logmel", sample_rate=8000)
    assert record["cached"] is True and conditional_accuracy(again, test.inputs(slice(None)), test.labels) == pytest.approx(record["test_accuracy"])
    _, record = load_or_train_classifier(tmp_path, train, test, num_classes=10, fingerprint="tones", epochs=12, seed=0, frontend="logmel", sample_rate=16000)
    assert record["cached"] is False  # another sample rate is another classifier


def test_audio_augmentation_adds_a_faint_noise_floor_to_about_half_the_clips() -> None:
    torch.manual_seed(0)
    model = ReferenceClassifier(1, num_classes=2, frontend="logmel", sample_rate=8000)
    silence = torch.zeros(400, 1, 1024)
    out = model.augment(silence)
    level = out.std(dim=(1, 2))
    noisy = level > 0
    assert 0.4 < noisy.float().mean() < 0.6
    assert level[noisy].min() >= NOISE_FLOOR[0] * 0.5 and level.max() <= NOISE_FLOOR[1] * 1.5
    assert out.abs().max() <= 1.0


def test_the_audio_classifier_ignores_a_noise_floor_and_an_old_recipe_is_trained_again(tmp_path: Path) -> None:
    train, test = tones(per_class=40, seed=0), tones(per_class=8, seed=1)
    options = dict(num_classes=10, fingerprint="tones", epochs=12, seed=0, frontend="logmel", sample_rate=8000)
    model, record = load_or_train_classifier(tmp_path, train, test, **options)
    assert record["recipe"] == RECIPE and record["test_accuracy_noise_floor"] >= record["test_accuracy"] - 0.1, record
    path = Path(record["path"])
    payload = torch.load(path, weights_only=True)
    payload["record"]["recipe"] = RECIPE - 1
    torch.save(payload, path)
    _, record = load_or_train_classifier(tmp_path, train, test, **options)
    assert record["cached"] is False


def test_a_frontend_needs_its_sample_rate() -> None:
    with pytest.raises(ValueError, match="frontend"):
        ReferenceClassifier(1, 10, frontend="logmel")
    with pytest.raises(ValueError, match="frontend"):
        ReferenceClassifier(1, 10, frontend="spectrogram", sample_rate=8000)
