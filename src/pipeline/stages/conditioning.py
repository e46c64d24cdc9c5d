"""What stage two's condition (``condition=class|none|text|audio``) means for the stages that train and use a DiT.

``class`` and ``none`` are the data's labels or nothing. ``text`` and ``audio`` are prompts from
another modality (``data=paired``): their stage-one tokenizer, the DiT's prompt encoder options,
and, once trained, the prompts a user or the evaluation gives, encoded the way training encoded them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from pipeline.data.paired import PromptSource
from pipeline.diffusion.paired_latents import as_prompts, encode_prompts
from pipeline.errors import UserError
from pipeline.fileio import file_digest
from pipeline.outputs import latest_output
from pipeline.tokenizer import VQVAE, load_tokenizer

PROMPT_KINDS = ("text", "audio")


def prompt_kind(cfg: DictConfig) -> str | None:
    """``text`` or ``audio`` when the DiT is conditioned on prompts, else None."""
    kind = str(cfg.condition.kind)
    return kind if kind in PROMPT_KINDS else None


def class_count(cfg: DictConfig) -> int:
    """Classes the prior reads: the data's with ``condition=class`` on labelled modalities, else 0 (unconditional or prompts)."""
    return int(cfg.data.num_classes) if cfg.condition.kind == "class" and cfg.modality.class_conditional else 0


def load_prompt_tokenizer(path: Path, source: PromptSource) -> VQVAE:
    """The stage-one tokenizer at ``path``, refused with one line when it was made for other prompts."""
    tokenizer = load_tokenizer(path)
    meta = tokenizer.tokenizer_metadata
    found = {"modality": meta.get("modality"), "example_shape": meta.get("example_shape")}
    expected = {"modality": source.modality, "example_shape": source.example_shape}
    if found != expected:
        raise UserError(f"the prompt tokenizer {path} was trained for {found}, but {source.modality} prompts are {expected}; pass a matching condition.tokenizer_ckpt=")
    return tokenizer


def training_prompt_tokenizer(cfg: DictConfig, source: PromptSource, resumed: dict[str, Any] | None = None) -> tuple[Path, VQVAE]:
    """``condition.tokenizer_ckpt``, or the newest finished stage-one run of ``condition.tokenizer_data``; a resumed
    run keeps the one its ``run.json`` (``resumed``) names, whatever stage-one runs finished since."""
    if resumed is not None:
        path = Path(str(resumed.get("prompt_tokenizer")))
        if not path.is_file():
            raise UserError(f"the prompt tokenizer this run trained on ({path}) is gone; it cannot be resumed, start a new run without resume=")
    else:
        path = latest_output(cfg, "vqvae", "tokenizer.pt", "condition.tokenizer_ckpt", str(cfg.condition.tokenizer_data))
    return path, load_prompt_tokenizer(path, source)


def dit_prompt_options(cfg: DictConfig, tokenizer: VQVAE, length: int) -> dict[str, int]:
    """The DiT's ``prompt`` argument: the prompt latents' shape (``length`` of the tokenizer's, as many as a prompt fills)
    and the encoder options of ``condition.encoder``."""
    channels, *sequence = tokenizer.tokenizer_metadata["latent_shape"]
    if len(sequence) != 1:
        raise UserError(f"prompts must be 1-D latent sequences; the {cfg.condition.kind} tokenizer makes {[channels, *sequence]}")
    options = {"channels": int(channels), "length": length, **{k: int(v) for k, v in cfg.condition.encoder.items()}}
    if options["length"] % options["patch_size"]:
        raise UserError(f"condition.encoder.patch_size={options['patch_size']} must divide the prompt's {options['length']} latents")
    return options


@dataclass
class PromptEncoding:
    """A trained prompt DiT's view of prompts: the source tokenizer, the statistics its prompts were normalized with
    and how many of their latents it reads."""

    kind: str
    tokenizer: VQVAE
    tokenizer_path: Path
    mean: torch.Tensor
    std: torch.Tensor
    length: int

    def __call__(self, examples: torch.Tensor) -> torch.Tensor:
        """Tokenizer inputs ``(P, ...)`` -> prompts ``(P, D + 1, L)`` as the DiT reads them."""
        return as_prompts(encode_prompts(self.tokenizer, examples, self.length), self.mean, self.std)

    @classmethod
    def of_dit(cls, metadata: dict[str, Any], source: PromptSource, dit_path: Path) -> PromptEncoding:
        """The encoding recorded in a DiT's metadata, with its tokenizer checked against the recorded digest."""
        record = metadata.get("condition") or {}
        path = Path(str(record.get("tokenizer", "")))
        if not path.is_file():
            raise UserError(f"{dit_path} reads {record.get('kind')} prompts through the tokenizer {path}, which is gone")
        if file_digest(path) != record.get("tokenizer_id"):
            raise UserError(f"the prompt tokenizer {path} changed since {dit_path} was trained on it (id {file_digest(path)} != {record.get('tokenizer_id')})")
        tokenizer = load_prompt_tokenizer(path, source)
        length = int(record.get("length") or tokenizer.tokenizer_metadata["latent_shape"][-1])
        return cls(record["kind"], tokenizer, path, torch.tensor(record["mean"]), torch.tensor(record["std"]), length)


def prompt_record(kind: str, tokenizer_path: Path, mean: torch.Tensor, std: torch.Tensor, length: int) -> dict[str, Any]:
    """What a prompt DiT's metadata says about its prompts (read back by :meth:`PromptEncoding.of_dit`)."""
    return {
        "kind": kind, "tokenizer": str(tokenizer_path.resolve()), "tokenizer_id": file_digest(tokenizer_path), "mean": mean.tolist(), "std": std.tolist(),
        "length": length,
    }
