"""tokenizer.pt: round trip, weights_only loading, and clear errors for bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from pipeline.errors import UserError
from pipeline.tokenizer import (
    VQVAE, AudioDecoder, AudioEncoder, AudioReconstruction, ImageDecoder, ImageEncoder, ImageReconstruction, TextDecoder, TextEncoder,
    TextReconstruction, VectorQuantizer, load_tokenizer, save_tokenizer,
)


def small_model(num_quantizers: int = 1) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(
        ImageEncoder(1, [8, 16], 1, 4), ImageDecoder(1, [8, 16], 1, 4),
        VectorQuantizer(4, 16, num_quantizers=num_quantizers, kmeans_init=False), ImageReconstruction(), size="tiny",
    )


@pytest.mark.parametrize("num_quantizers", [1, 2])
def test_round_trip_reproduces_outputs(tmp_path: Path, num_quantizers: int) -> None:
    model = small_model(num_quantizers).eval()
    path = save_tokenizer(model, tmp_path / "tokenizer.pt", {"data": "toy", "latent_shape": [4, 8, 8]})
    loaded = load_tokenizer(path)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        expected, expected_q = model(x)
    actual, actual_q = loaded(x)
    assert torch.equal(expected_q.indices, actual_q.indices)
    assert torch.allclose(expected, actual)
    assert loaded.tokenizer_metadata == {"data": "toy", "latent_shape": [4, 8, 8]}
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "nope.pt")


def test_truncated_file(tmp_path: Path) -> None:
    path = save_tokenizer(small_model(), tmp_path / "tokenizer.pt", {})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match="cannot read tokenizer file") as err:
        load_tokenizer(path)
    assert "\n" not in str(err.value)


def test_pickled_object_is_refused(tmp_path: Path) -> None:
    """weights_only=True: a file that needs arbitrary unpickling never runs its code."""
    path = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):  # noqa: ANN204 - pickle protocol
            return (print, ("pwned",))

    torch.save({"format": "pipeline.tokenizer/1", "config": Payload()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(UserError, match="cannot read tokenizer file"):
        load_tokenizer(path)


def test_foreign_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(UserError, match="not a pipeline tokenizer file"):
        load_tokenizer(path)


def test_unknown_network_class(tmp_path: Path) -> None:
    path = save_tokenizer(small_model(), tmp_path / "tokenizer.pt", {})
    payload = torch.load(path, weights_only=True)
    payload["config"]["encoder"]["class"] = "os.system"
    torch.save(payload, path)
    with pytest.raises(UserError, match="unknown network 'os.system'"):
        load_tokenizer(path)


@pytest.mark.parametrize("modality", ["audio", "text"])
def test_one_dimensional_tokenizers_round_trip(tmp_path: Path, modality: str) -> None:
    torch.manual_seed(0)
    if modality == "audio":
        objective = AudioReconstruction(8000, l1_weight=0.5, mel_weight=1.0, log_floor=1e-3)
        model = VQVAE(AudioEncoder(1, [8, 16], [4], 1, 4), AudioDecoder(1, [8, 16], [4], 1, 4), VectorQuantizer(4, 16, kmeans_init=False), objective)
        x = torch.rand(2, 1, 256) * 2 - 1
    else:
        model = VQVAE(TextEncoder(256, [16, 32], [2], 1, 4), TextDecoder(256, [16, 32], [2], 1, 4), VectorQuantizer(4, 16, kmeans_init=False), TextReconstruction())
        x = torch.randint(0, 256, (2, 32))
    model.eval()
    loaded = load_tokenizer(save_tokenizer(model, tmp_path / "tokenizer.pt", {"data": "toy"}))
    assert type(loaded.reconstruction) is type(model.reconstruction) and loaded.reconstruction.config == model.reconstruction.config
    with torch.no_grad():
        expected, quantized = model(x)
        assert torch.allclose(loaded(x)[0], expected, atol=1e-6)
        assert quantized.indices.shape == (2, x.shape[-1] // 4 if modality == "audio" else x.shape[-1] // 2)
        assert torch.allclose(loaded.decode_indices(quantized.indices), expected, atol=1e-5)


def test_a_format_1_image_tokenizer_still_loads(tmp_path: Path) -> None:
    model = small_model().eval()
    path = save_tokenizer(model, tmp_path / "tokenizer.pt", {"data": "toy"})
    payload = torch.load(path, weights_only=True)
    config = payload["config"]
    config["loss"] = {"l1_weight": 0.5, "mse_weight": 2.0, "commitment_weight": config.pop("commitment_weight")}
    del config["reconstruction"]
    payload["format"] = "pipeline.tokenizer/1"
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_tokenizer(tmp_path / "old.pt")
    assert loaded.reconstruction.config == {"l1_weight": 0.5, "mse_weight": 2.0}
