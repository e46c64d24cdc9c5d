"""The AR prior's LightningModule: next-code cross-entropy, AdamW, an EMA copy for sampling (as the DiT has)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from pipeline.ar.model import ARPrior
from pipeline.diffusion.ema import ema_model
from pipeline.optim import optimizer_config

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class ARModule(L.LightningModule):
    """Trains ``model`` on code sequences; ``ema`` holds the averaged weights that ``ar.pt`` keeps.

    Args:
        model: the :class:`ARPrior`.
        optimizer, scheduler: partials, completed with the parameters / the optimizer and ``total_steps``.
        ema_decay: decay of the weight average (ramped up over the first steps).
    """

    def __init__(self, model: ARPrior, optimizer: OptimizerFactory | None = None, scheduler: SchedulerFactory | None = None, ema_decay: float = 0.999) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.ema = ema_model(model, ema_decay)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        codes, labels = batch
        loss = self.model.loss(codes, labels)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.model)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        codes, labels = batch
        self.log("val/loss", self.ema.module.loss(codes, labels), sync_dist=True, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        return optimizer_config(self.optimizer_factory, self.scheduler_factory, self.model.parameters(), int(self.trainer.estimated_stepping_batches), type(self).__name__)
