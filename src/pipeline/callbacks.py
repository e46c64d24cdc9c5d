"""Lightning callbacks: the reconstruction grid and plain progress lines for non-terminals."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from pipeline.media import image_grid, save_png


class ReconstructionGrid(L.Callback):
    """After each validation: the first ``num_images`` val images above their reconstructions.

    Saved as ``samples/recon_step<step>.png`` in the run directory and logged to W&B as
    ``val/reconstructions``. The same images every time, so grids compare across steps.
    """

    def __init__(self, out_dir: str | Path, num_images: int = 8) -> None:
        self.out_dir, self.num_images = Path(out_dir), num_images
        self.last_path: Path | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        dataset = trainer.datamodule.splits["val"]
        originals = torch.stack([dataset[i][0] for i in range(min(self.num_images, len(dataset)))]).to(pl_module.device)
        with torch.no_grad():
            reconstructions, _ = pl_module(originals)
        path = save_png(image_grid([originals, reconstructions]), self.out_dir / f"recon_step{trainer.global_step:06d}.png")
        self.last_path = path
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/reconstructions", [str(path)], step=trainer.global_step, caption=["top: originals, bottom: reconstructions"])


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
