"""Lightning callbacks: reconstruction and sample grids, and plain progress lines for non-terminals."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from pipeline.diffusion.generate import generate
from pipeline.media import Media
from pipeline.tokenizer import VQVAE


class ReconstructionGrid(L.Callback):
    """After each validation: the first ``num_examples`` val examples beside their reconstructions.

    Written by the modality's media writer as ``samples/recon_step<step>.*`` in the run directory
    (a PNG grid; for audio also WAVs, for text a text file) and logged to W&B as
    ``val/reconstructions``. The same examples every time, so they compare across steps.
    """

    def __init__(self, media: Media, out_dir: str | Path, num_examples: int = 8) -> None:
        self.media, self.out_dir, self.num_examples = media, Path(out_dir), num_examples
        self.last_path: Path | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        dataset = trainer.datamodule.splits["val"]
        originals = torch.stack([dataset[i][0] for i in range(min(self.num_examples, len(dataset)))]).to(pl_module.device)
        with torch.no_grad():
            outputs, _ = pl_module(originals)
        rows, names = [self.media.to_data(originals), self.media.to_data(outputs)], ["original", "reconstruction"]
        files = self.media.save_rows(rows, names, self.out_dir / f"recon_step{trainer.global_step:06d}")
        self.last_path = files[0]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                self.media.log(logger, "val/reconstructions", rows, names, files, trainer.global_step, "originals, then reconstructions")


class SampleGrid(L.Callback):
    """Every ``every_n_steps`` and at the end of training: EMA samples from the same noise, one row per condition.

    ``rows()`` gives the condition of each row (class labels, or prompts; None: one unconditional
    row) and the rows' names; each row holds ``per_row`` samples. Written by the modality's media
    writer as ``samples/step<step>.*`` and logged to W&B as ``samples/grid``, so runs compare by
    eye (or ear) at equal steps.
    """

    def __init__(
        self, media: Media, tokenizer: VQVAE, out_dir: str | Path, every_n_steps: int, per_row: int, steps: int, sampler: str | None,
        cfg_scale: float, seed: int, rows: Callable[[], tuple[torch.Tensor | None, list[str]]], snap_to_codes: bool = False,
        temperature: float = 1.0,
    ) -> None:
        self.media, self.tokenizer, self.out_dir, self.every_n_steps = media, tokenizer, Path(out_dir), every_n_steps
        self.per_row, self.steps, self.sampler, self.cfg_scale, self.seed = per_row, steps, sampler, cfg_scale, seed
        self.rows, self.snap_to_codes, self.temperature = rows, snap_to_codes, temperature
        self.last_path: Path | None = None
        self.last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self.render(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.last_step != trainer.global_step:
            self.render(trainer, pl_module)

    def render(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        conditions, names = self.rows()
        count = len(names) * self.per_row
        repeated = conditions.repeat_interleave(self.per_row, dim=0) if conditions is not None else None
        self.tokenizer.to(pl_module.device)
        samples = self.media.to_data(generate(
            pl_module.ema.module, pl_module.objective, self.tokenizer, pl_module.latent_mean, pl_module.latent_std, repeated, count,
            self.steps, self.sampler, self.cfg_scale, torch.Generator().manual_seed(self.seed), snap_to_codes=self.snap_to_codes,
            temperature=self.temperature,
        ))
        grid_rows = list(samples.view(len(names), self.per_row, *samples.shape[1:]))
        files = self.media.save_rows(grid_rows, names, self.out_dir / f"step{trainer.global_step:06d}")
        self.last_path, self.last_step = files[0], trainer.global_step
        caption = f"EMA, {self.steps} steps, guidance {self.cfg_scale}"
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                self.media.log(logger, "samples/grid", grid_rows, names, files, trainer.global_step, caption)


def class_rows(num_classes: int) -> tuple[torch.Tensor | None, list[str]]:
    """One grid row per class (``None``, one unconditional row, without classes)."""
    if num_classes <= 0:
        return None, ["unconditional"]
    return torch.arange(num_classes), [f"class {c}" for c in range(num_classes)]


class PlainProgress(L.Callback):
    """One line every ``every_n_steps`` training steps: for CI logs and files, where a live bar is noise."""

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = every_n_steps
        self.start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step % self.every_n_steps:
            return
        metrics = _format_metrics(trainer.progress_bar_metrics)
        rate = step / max(time.perf_counter() - self.start, 1e-9)
        print(f"step {step}/{trainer.max_steps} {rate:.2f} it/s {metrics}", flush=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = _format_metrics({k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        print(f"validation at step {trainer.global_step}: {metrics}", flush=True)


def _format_metrics(metrics: dict) -> str:
    return " ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))


def interactive_terminal() -> bool:
    """A live progress bar only on a real terminal, never under CI."""
    return sys.stdout.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes")
