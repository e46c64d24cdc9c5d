"""Loading a trained DiT with the exact tokenizer it was trained on: shared by ``stage=sample`` and ``stage=eval``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from pipeline.diffusion import LoadedDiT, file_digest, generate, load_dit
from pipeline.errors import UserError
from pipeline.stages.common import checked_sampler, latest_output
from pipeline.stages.conditioning import PROMPT_KINDS, PromptEncoding, prompt_source
from pipeline.tokenizer import VQVAE, load_tokenizer


@dataclass
class Generator:
    dit: LoadedDiT
    tokenizer: VQVAE
    dit_path: Path
    tokenizer_path: Path
    device: torch.device
    prompts: PromptEncoding | None = None  # a DiT conditioned on prompts: how they are encoded

    def conditions(self, examples: torch.Tensor) -> torch.Tensor:
        """Prompts as the source tokenizer takes them ``(P, ...)`` -> what the DiT reads."""
        assert self.prompts is not None, "a class-conditional DiT reads labels"
        return self.prompts(examples)

    def samples(self, labels: torch.Tensor | None, num: int, cfg: DictConfig, seed: int) -> torch.Tensor:
        """``num`` decoder outputs (images or audio in [-1, 1], byte logits) with the ``sample.*`` settings; the same seed gives the same samples.

        ``labels``: each sample's condition (class labels, or prompts from :meth:`conditions`), or None."""
        return generate(
            self.dit.model, self.dit.objective, self.tokenizer, self.dit.mean.to(self.device), self.dit.std.to(self.device), labels, num,
            cfg.sample.steps, cfg.sample.sampler, cfg.sample.cfg_scale, torch.Generator().manual_seed(seed), cfg.sample.batch_size,
            cfg.sample.snap_to_codes,
        ).cpu()


def load_generator(cfg: DictConfig, data: Any) -> Generator:
    """``dit_ckpt`` (default: the newest finished DiT run of this data) and the tokenizers recorded in it;
    ``data`` (instantiated) has the prompts when the DiT reads them."""
    dit_path = latest_output(cfg, "dit", "dit.pt", "dit_ckpt")
    dit = load_dit(dit_path)
    if dit.metadata.get("modality", cfg.data.modality) != cfg.data.modality:
        raise UserError(f"{dit_path} is a {dit.metadata['modality']} model but data={cfg.data.name} is {cfg.data.modality}")
    trained_on = (dit.metadata.get("condition") or {}).get("kind", "class" if dit.model.num_classes else "none")
    wanted = str(cfg.condition.kind)
    if trained_on != wanted and (trained_on in PROMPT_KINDS or wanted in PROMPT_KINDS):
        raise UserError(f"{dit_path} was trained with condition={trained_on}, not condition={wanted}: pass condition={trained_on} or another dit_ckpt=")
    checked_sampler(dit.objective, cfg.sample.sampler)
    tokenizer_path = Path(cfg.tokenizer_ckpt or dit.metadata.get("tokenizer", "")).expanduser()
    tokenizer = load_tokenizer(tokenizer_path)
    if file_digest(tokenizer_path) != dit.metadata.get("tokenizer_id"):
        raise UserError(
            f"tokenizer {tokenizer_path} is not the one {dit_path} was trained on (id {file_digest(tokenizer_path)} != {dit.metadata.get('tokenizer_id')}); "
            "pass tokenizer_ckpt= the original tokenizer.pt"
        )
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")
    prompts = PromptEncoding.of_dit(dit.metadata, prompt_source(data, trained_on), dit_path) if trained_on in PROMPT_KINDS else None
    dit.model.to(device)
    tokenizer.to(device)
    if prompts is not None:
        prompts.tokenizer.to(device)
    return Generator(dit, tokenizer, dit_path, tokenizer_path, device, prompts)
