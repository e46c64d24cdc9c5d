"""``tokenizer.pt``: plain tensors and a plain-dict config, loadable with ``weights_only=True``.

The file never names a Python object to import: networks are looked up by class name in
:data:`pipeline.tokenizer.networks.NETWORKS`, so loading an untrusted file cannot run code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import UserError, one_line
from pipeline.fileio import atomic_write
from pipeline.tokenizer.networks import NETWORKS
from pipeline.tokenizer.quantizer import VectorQuantizer
from pipeline.tokenizer.vqvae import VQVAE

FORMAT = "pipeline.tokenizer/1"


def tokenizer_config(model: VQVAE) -> dict[str, Any]:
    """The plain dict that rebuilds ``model``'s networks."""
    quantizer = model.quantizer
    first = quantizer.codebooks[0]
    return {
        "encoder": {"class": type(model.encoder).__name__, **model.encoder.config},
        "decoder": {"class": type(model.decoder).__name__, **model.decoder.config},
        "quantizer": {
            "dim": quantizer.dim,
            "codebook_size": quantizer.codebook_size,
            "num_quantizers": quantizer.num_quantizers,
            "decay": first.decay,
            "eps": first.eps,
            "kmeans_iters": first.kmeans_iters,
            "dead_code_threshold": first.dead_code_threshold,
            "cosine": quantizer.cosine,
        },
        "loss": {k: float(model.hparams[k]) for k in ("l1_weight", "mse_weight", "commitment_weight")},
    }


def save_tokenizer(model: VQVAE, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``tokenizer.pt`` atomically; ``metadata`` (data name, modality, shapes) must be plain."""
    payload = {
        "format": FORMAT,
        "config": tokenizer_config(model),
        "metadata": metadata,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith(("val_", "test_"))},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def _build_network(spec: dict[str, Any]) -> torch.nn.Module:
    kwargs = dict(spec)
    name = kwargs.pop("class")
    if name not in NETWORKS:
        raise UserError(f"tokenizer file names an unknown network {name!r}; known: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name](**kwargs)


def load_tokenizer(path: str | Path, map_location: str | torch.device = "cpu") -> VQVAE:
    """Load ``tokenizer.pt`` into a frozen VQ-VAE in eval mode (no gradients).

    Raises :class:`UserError` with one clear line for a missing, corrupt or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer file not found: {path} (train one with: python -m pipeline stage=vqvae data=<name>)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, random bytes, pickled objects: all the same to the user
        raise UserError(f"cannot read tokenizer file {path}: {one_line(err, 200)}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a pipeline tokenizer file (expected format {FORMAT!r})")
    config = payload["config"]
    model = VQVAE(
        encoder=_build_network(config["encoder"]),
        decoder=_build_network(config["decoder"]),
        quantizer=VectorQuantizer(kmeans_init=False, **config["quantizer"]),
        **config["loss"],
    )
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    missing = [k for k in missing if not k.startswith(("val_", "test_"))]
    if missing or unexpected:
        raise UserError(f"{path} does not match its own config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tokenizer_metadata = payload.get("metadata", {})
    model.eval().requires_grad_(False)
    return model
