"""Skip optimizer steps whose gradients are not finite; stop the run when too many come in a row.

One NaN batch (a bad example, an overflow) should cost one step, not the run; a run that keeps
producing them has diverged, and training on should not bury the last good weights. The check
looks at the gradients just before the optimizer step: under DDP they are already all-reduced, so
every rank takes the same decision without another collective. A skipped step applies nothing
(gradients set to None: AdamW then leaves those parameters, and their moments, alone).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

from pipeline.errors import Diverged

log = logging.getLogger("pipeline")


class SkipNonFiniteSteps(L.Callback):
    """Drop a step with a non-finite gradient; after ``patience`` in a row, save ``checkpoint`` and raise :class:`Diverged`.

    The weights saved then are those of the last finite step: no non-finite step was applied.
    """

    def __init__(self, patience: int, checkpoint: str | Path) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.patience, self.checkpoint = patience, Path(checkpoint)
        self.in_a_row = 0
        self.skipped = 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:  # 16-mixed: the loss scaler skips overflowing steps itself
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads or bool(torch.stack([g.float().abs().amax() for g in grads]).isfinite().all()):
            self.in_a_row = 0
            return
        optimizer.zero_grad(set_to_none=True)
        self.in_a_row += 1
        self.skipped += 1
        log.warning("step %d: non-finite gradients, step skipped (%d in a row, the run stops at %d)", trainer.global_step, self.in_a_row, self.patience)
        if self.in_a_row >= self.patience:
            trainer.save_checkpoint(self.checkpoint, weights_only=False)  # a full checkpoint: optimizer, loops, callbacks
            raise Diverged(trainer.global_step, self.in_a_row, self.checkpoint)

    def state_dict(self) -> dict[str, Any]:
        return {"in_a_row": self.in_a_row, "skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.in_a_row, self.skipped = state_dict["in_a_row"], state_dict["skipped"]
