"""``run(cfg)``: dispatch to the function of stage ``cfg.stage.name``.

Each stage function is pure in the sense the project uses: no globals, no chdir; it writes
only under its run directory and the shared caches (``data/``, ``outputs/<data>/latents``,
``outputs/<data>/classifier``) and returns its results.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from omegaconf import DictConfig

from pipeline.checks import check_config
from pipeline.errors import UserError

# stage name -> "module:function", imported only when that stage runs
STAGES: dict[str, str] = {
    "vqvae": "pipeline.stages.vqvae:train_vqvae",
    "dit": "pipeline.stages.dit:train_dit",
    "ar": "pipeline.stages.ar:train_ar",
    "sample": "pipeline.stages.sample:sample",
    "eval": "pipeline.stages.evaluate:evaluate",
}


def route_lightning_logs() -> None:
    """Lightning adds its own stderr handlers on import; under Hydra's handlers every line would print twice."""
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the stage ``cfg.stage.name`` and return its results."""
    route_lightning_logs()
    name = cfg.stage.name
    if name not in STAGES:
        raise UserError(f"stage={name} is not available; valid: {', '.join(STAGES)}")
    check_config(cfg)
    import torch  # only now: a config mistake is reported before torch and Lightning load

    torch.set_float32_matmul_precision("high")
    module, function = STAGES[name].split(":")
    return getattr(importlib.import_module(module), function)(cfg)
