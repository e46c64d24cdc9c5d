"""Loading a trained prior (the DiT, or the AR baseline with ``prior=ar``) with the exact tokenizer it was
trained on: shared by ``stage=sample`` and ``stage=eval``."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig

from pipeline.ar import LoadedAR, load_ar
from pipeline.diffusion import LoadedDiT, Objective, RectifiedFlow, Restart, file_digest, generate, load_dit
from pipeline.errors import UserError
from pipeline.outputs import latest_output
from pipeline.stages.common import checked_sampler, code_temperature
from pipeline.stages.conditioning import PROMPT_KINDS, PromptEncoding
from pipeline.tokenizer import VQVAE, load_tokenizer


@dataclass
class Generator:
    """A trained DiT and its tokenizer (and, for a prompt DiT, how prompts are encoded)."""

    kind: ClassVar[str] = "dit"
    dit: LoadedDiT
    tokenizer: VQVAE
    path: Path
    tokenizer_path: Path
    device: torch.device
    prompts: PromptEncoding | None = None  # a DiT conditioned on prompts: how they are encoded

    @property
    def num_classes(self) -> int:
        return self.dit.model.num_classes

    def conditions(self, examples: torch.Tensor) -> torch.Tensor:
        """Prompts as the source tokenizer takes them ``(P, ...)`` -> what the DiT reads."""
        assert self.prompts is not None, "a class-conditional DiT reads labels"
        return self.prompts(examples)

    def settings(self, cfg: DictConfig) -> dict[str, Any]:
        """The sampling settings in effect (``eval.json``, captions)."""
        predicts_codes = self.dit.model.code_head is not None
        codes = {"temperature": cfg.sample.temperature} if predicts_codes else {}
        grid = {"grid_shift": self.dit.objective.grid_shift} if isinstance(self.dit.objective, RectifiedFlow) else {}
        rounds = self.restart(cfg).settings(codes=predicts_codes)
        return {"prior": "dit", "sampler": cfg.sample.sampler or self.dit.objective.default_sampler, "steps": cfg.sample.steps,
                "cfg_scale": cfg.sample.cfg_scale, "snap_to_codes": cfg.sample.snap_to_codes, **grid, **codes, **rounds}

    def describe(self, cfg: DictConfig) -> str:
        shifted = isinstance(self.dit.objective, RectifiedFlow) and self.dit.objective.grid_shift != 1
        grid = f" (grid shift {self.dit.objective.grid_shift:g})" if shifted else ""
        codes = f", temperature {cfg.sample.temperature}" if self.dit.model.code_head is not None else ""
        rounds = self.restart(cfg)
        hotter = f" at temperature {rounds.temperature:g}" if rounds.count and self.dit.model.code_head is not None else ""
        restarts = f", {rounds.count} restarts of {rounds.steps} steps from t = {rounds.time:g}{hotter}" if rounds.count else ""
        return f"{cfg.sample.steps} {cfg.sample.sampler or self.dit.objective.default_sampler} steps{grid}{restarts}, guidance {cfg.sample.cfg_scale}{codes}"

    def samples(self, labels: torch.Tensor | None, num: int, cfg: DictConfig, seed: int) -> torch.Tensor:
        """``num`` decoder outputs (images or audio in [-1, 1], byte logits) with the ``sample.*`` settings; the same seed gives the same samples.

        ``labels``: each sample's condition (class labels, or prompts from :meth:`conditions`), or None."""
        return generate(
            self.dit.model, self.dit.objective, self.tokenizer, self.dit.mean.to(self.device), self.dit.std.to(self.device), labels, num,
            cfg.sample.steps, cfg.sample.sampler, cfg.sample.cfg_scale, torch.Generator().manual_seed(seed), cfg.sample.batch_size,
            cfg.sample.snap_to_codes, code_temperature(self.dit.model, cfg.sample.temperature), self.restart(cfg),
        ).cpu()

    def restart(self, cfg: DictConfig) -> Restart:
        """The restart sampling of ``sample.restart`` (checked by :func:`pipeline.checks.check_config`); its
        temperature is 1 for a DiT that regresses velocities, as :func:`code_temperature` says."""
        rounds = cfg.sample.restart
        temperature = code_temperature(self.dit.model, rounds.temperature, "sample.restart.temperature")
        return Restart(int(rounds.count), float(rounds.time), int(rounds.steps), temperature)


@dataclass
class ARGenerator:
    """The AR baseline prior and its tokenizer: codes drawn one at a time, decoded by the tokenizer."""

    kind: ClassVar[str] = "ar"
    ar: LoadedAR
    tokenizer: VQVAE
    path: Path
    tokenizer_path: Path
    device: torch.device
    prompts: None = None  # the AR baseline reads class labels only

    @property
    def num_classes(self) -> int:
        return self.ar.model.num_classes

    def settings(self, cfg: DictConfig) -> dict[str, Any]:
        return {"prior": "ar", "temperature": cfg.sample.temperature, "top_k": cfg.sample.top_k}

    def describe(self, cfg: DictConfig) -> str:
        return f"AR prior, temperature {cfg.sample.temperature}, top-k {cfg.sample.top_k or 'all'}"

    @torch.no_grad()
    def samples(self, labels: torch.Tensor | None, num: int, cfg: DictConfig, seed: int) -> torch.Tensor:
        """``num`` decoder outputs from sampled code sequences, in batches of ``sample.batch_size``; the same seed gives the same samples."""
        generator, grid = torch.Generator().manual_seed(seed), self.ar.metadata["latent_shape"][1:]
        out = []
        for start in range(0, num, cfg.sample.batch_size):
            count = min(cfg.sample.batch_size, num - start)
            y = labels[start:start + count] if labels is not None else None
            codes = self.ar.model.sample(y, count, cfg.sample.temperature, cfg.sample.top_k, generator)
            out.append(self.tokenizer.decode_indices(codes.view(count, *grid).to(self.device)).cpu())
        return torch.cat(out)


def recorded_tokenizer(cfg: DictConfig, metadata: dict[str, Any], prior_path: Path) -> tuple[Path, VQVAE]:
    """The tokenizer a prior was trained on (``tokenizer_ckpt`` if given), refused when its digest differs from the recorded one."""
    tokenizer_path = Path(cfg.tokenizer_ckpt or metadata.get("tokenizer", "")).expanduser()
    tokenizer = load_tokenizer(tokenizer_path)
    if file_digest(tokenizer_path) != metadata.get("tokenizer_id"):
        raise UserError(
            f"tokenizer {tokenizer_path} is not the one {prior_path} was trained on (id {file_digest(tokenizer_path)} != {metadata.get('tokenizer_id')}); "
            "pass tokenizer_ckpt= the original tokenizer.pt"
        )
    return tokenizer_path, tokenizer


def check_modality(cfg: DictConfig, metadata: dict[str, Any], prior_path: Path) -> None:
    if metadata.get("modality", cfg.data.modality) != cfg.data.modality:
        raise UserError(f"{prior_path} is a {metadata['modality']} model but data={cfg.data.name} is {cfg.data.modality}")


def device_of(cfg: DictConfig) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")


def load_generator(cfg: DictConfig, data: Any) -> Generator | ARGenerator:
    """The prior ``prior`` names (default the newest finished DiT run of this data, or ``dit_ckpt``; ``prior=ar``:
    the newest AR run, or ``ar_ckpt``) and the tokenizers recorded in it; ``data`` (instantiated) has the
    prompts when the DiT reads them."""
    if cfg.prior == "ar":
        return load_ar_generator(cfg)
    dit_path = latest_output(cfg, "dit", "dit.pt", "dit_ckpt")
    dit = load_dit(dit_path)
    check_modality(cfg, dit.metadata, dit_path)
    trained_on = (dit.metadata.get("condition") or {}).get("kind", "class" if dit.model.num_classes else "none")
    wanted = str(cfg.condition.kind)
    if trained_on != wanted and (trained_on in PROMPT_KINDS or wanted in PROMPT_KINDS):
        raise UserError(f"{dit_path} was trained with condition={trained_on}, not condition={wanted}: pass condition={trained_on} or another dit_ckpt=")
    checked_sampler(dit.objective, cfg.sample.sampler)
    dit = replace(dit, objective=sampling_objective(dit.objective, cfg.sample.grid_shift, dit_path))
    code_temperature(dit.model, cfg.sample.temperature)
    tokenizer_path, tokenizer = recorded_tokenizer(cfg, dit.metadata, dit_path)
    device = device_of(cfg)
    prompts = PromptEncoding.of_dit(dit.metadata, data.prompt_source, dit_path) if trained_on in PROMPT_KINDS else None
    dit.model.to(device)
    tokenizer.to(device)
    if prompts is not None:
        prompts.tokenizer.to(device)
    return Generator(dit, tokenizer, dit_path, tokenizer_path, device, prompts)


def sampling_objective(objective: Objective, grid_shift: float | None, path: Path) -> Objective:
    """``objective``, its sampler's grid shifted by ``grid_shift`` (``sample.grid_shift``; None: as the DiT was saved)."""
    if grid_shift is None:
        return objective
    if not isinstance(objective, RectifiedFlow):
        raise UserError(f"sample.grid_shift={grid_shift} shifts a flow sampler's grid, but {path} was trained with objective={objective.name}")
    return RectifiedFlow(**{**objective.config, "grid_shift": grid_shift})


def load_ar_generator(cfg: DictConfig) -> ARGenerator:
    ar_path = latest_output(cfg, "ar", "ar.pt", "ar_ckpt")
    ar = load_ar(ar_path)
    check_modality(cfg, ar.metadata, ar_path)
    tokenizer_path, tokenizer = recorded_tokenizer(cfg, ar.metadata, ar_path)
    grid = ar.metadata.get("latent_shape", [0])[1:]
    if math.prod(grid) != ar.model.length or tokenizer.quantizer.codebook_size != ar.model.vocab_size:
        raise UserError(f"{ar_path} does not fit its tokenizer {tokenizer_path} (codes {ar.model.length} x {ar.model.vocab_size}, latents {grid})")
    device = device_of(cfg)
    ar.model.to(device)
    tokenizer.to(device)
    return ARGenerator(ar, tokenizer, ar_path, tokenizer_path, device)
