"""What every benchmark shares: timing, summary statistics and the project's default models.

The default models come from the real Hydra configs (``conf/``), so a benchmark follows the
defaults when they change instead of freezing a copy of them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from pipeline.config import config_dir, register_resolvers
from pipeline.stages.common import tokenizer_latent_shape
from pipeline.tokenizer import VQVAE


def time_s(step: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def stats(samples: list[float], unit: str = "s") -> dict[str, float]:
    """Median, min and interquartile range of timings, keys suffixed with ``unit``."""
    quartiles = statistics.quantiles(samples, n=4)
    return {f"median_{unit}": statistics.median(samples), f"min_{unit}": min(samples), f"p25_{unit}": quartiles[0], f"p75_{unit}": quartiles[2]}


def default_config(*overrides: str) -> DictConfig:
    """``conf/config.yaml`` composed as the CLI would compose it for these overrides (no Hydra run)."""
    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return compose(config_name="config", overrides=["run_name=bench", *overrides])


def default_tokenizer(cfg: DictConfig, seed: int) -> VQVAE:
    """The configured tokenizer with seeded random weights, frozen in eval mode (timing does not depend on training)."""
    torch.manual_seed(seed)
    return instantiate(cfg.vqvae).eval().requires_grad_(False)


def latent_shape(cfg: DictConfig) -> tuple[int, ...]:
    """The configured tokenizer's latent shape for the configured data (channels, then height and width for images)."""
    return tuple(tokenizer_latent_shape(cfg, instantiate(cfg.vqvae)))
