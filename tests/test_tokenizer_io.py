"""tokenizer.pt: round trip, weights_only loading, and clear errors for bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from pipeline.errors import UserError
from pipeline.tokenizer import VQVAE, ImageDecoder, ImageEncoder, VectorQuantizer, load_tokenizer, save_tokenizer


def small_model(num_quantizers: int = 1) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(
        ImageEncoder(1, [8, 16], 1, 4), ImageDecoder(1, [8, 16], 1, 4),
        VectorQuantizer(4, 16, num_quantizers=num_quantizers, kmeans_init=False), size="tiny",
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
