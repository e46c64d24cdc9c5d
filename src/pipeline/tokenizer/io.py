"""``tokenizer.pt``: plain tensors and a plain-dict config, loadable with ``weights_only=True``.

The file never names a Python object to import: networks and reconstruction objectives are looked
up by class name in :data:`~pipeline.tokenizer.networks1d.NETWORKS` and
:data:`~pipeline.tokenizer.reconstruction.RECONSTRUCTIONS`, so loading an untrusted file cannot run
code. Format 1 (image only, before issue 5) stored the image loss weights under ``loss``; it still loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.errors import UserError, one_line
from pipeline.tokenizer.networks1d import NETWORKS
from pipeline.tokenizer.quantizer import VectorQuantizer
from pipeline.tokenizer.reconstruction import RECONSTRUCTIONS, ImageReconstruction
from pipeline.tokenizer.vqvae import VQVAE
from pipeline.weights_file import read_weights_file, write_weights_file

FORMAT = "pipeline.tokenizer/2"
FORMATS = ("pipeline.tokenizer/1", FORMAT)  # readable


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
        "reconstruction": {"class": type(model.reconstruction).__name__, **model.reconstruction.config},
        "commitment_weight": float(model.hparams["commitment_weight"]),
    }


def save_tokenizer(model: VQVAE, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``tokenizer.pt`` atomically; ``metadata`` (data name, modality, shapes) must be plain."""
    return write_weights_file(path, {
        "format": FORMAT,
        "config": tokenizer_config(model),
        "metadata": metadata,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith(("val_", "test_"))},
    })


def _build(spec: dict[str, Any], known: dict[str, type[torch.nn.Module]], what: str) -> torch.nn.Module:
    kwargs = dict(spec)
    name = kwargs.pop("class")
    if name not in known:
        raise UserError(f"tokenizer file names an unknown {what} {name!r}; known: {', '.join(sorted(known))}")
    return known[name](**kwargs)


def _reconstruction_and_commitment(config: dict[str, Any]) -> tuple[torch.nn.Module, float]:
    """Format 2 names the reconstruction objective; format 1 held the image loss weights under ``loss``."""
    if "loss" in config:
        loss = config["loss"]
        return ImageReconstruction(loss["l1_weight"], loss["mse_weight"]), loss["commitment_weight"]
    return _build(config["reconstruction"], RECONSTRUCTIONS, "reconstruction objective"), config["commitment_weight"]


def load_tokenizer(path: str | Path, map_location: str | torch.device = "cpu") -> VQVAE:
    """Load ``tokenizer.pt`` into a frozen VQ-VAE in eval mode (no gradients).

    Raises :class:`UserError` with one clear line for a missing, corrupt or foreign file.
    """
    payload = read_weights_file(path, FORMATS, "tokenizer", "train one with: python -m pipeline stage=vqvae data=<name>", map_location)
    try:
        config = payload["config"]
        reconstruction, commitment_weight = _reconstruction_and_commitment(config)
        model = VQVAE(
            encoder=_build(config["encoder"], NETWORKS, "network"),
            decoder=_build(config["decoder"], NETWORKS, "network"),
            quantizer=VectorQuantizer(kmeans_init=False, **config["quantizer"]),
            reconstruction=reconstruction,
            commitment_weight=commitment_weight,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path} is damaged or does not match its own config: {one_line(err, 200)}") from err
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    missing = [k for k in missing if not k.startswith(("val_", "test_"))]
    if missing or unexpected:
        raise UserError(f"{path} does not match its own config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tokenizer_metadata = payload.get("metadata", {})
    model.eval().requires_grad_(False)
    return model
