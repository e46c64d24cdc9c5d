"""From the config to what each process trains with: the strategy, the precision and the batch per device.

``data.batch_size`` is the global batch: what one optimizer step sees, whatever the number of
devices. :func:`device_batch` splits it over ``trainer.devices x trainer.num_nodes`` processes and,
when a device cannot hold its share (``data.device_batch_size``), into gradient-accumulation
micro-batches, so moving a recipe from one CPU to eight GPUs keeps its optimisation unchanged.
A device's cap is the top-level ``device_batch_size`` (null: no cap).
Every refusal here is a :class:`UserError`: one line, exit status 2, before any work starts.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import math
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.strategies import FSDPStrategy, Strategy
from omegaconf import DictConfig, OmegaConf

from pipeline.errors import UserError

log = logging.getLogger("pipeline")
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp", "deepspeed")


def fsdp_strategy(wrap: list[str], **kwargs: Any) -> FSDPStrategy:
    """Lightning's FSDP with every module of a class named in ``wrap`` as its own shard unit."""
    return FSDPStrategy(auto_wrap_policy={get_class(name) for name in wrap}, **kwargs)


def accelerator(cfg: DictConfig) -> str:
    """``trainer.accelerator`` with ``auto`` resolved the way Lightning resolves it here: ``gpu`` or ``cpu``."""
    chosen = str(cfg.trainer.accelerator)
    if chosen == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if chosen == "cuda" else chosen


def world_size(cfg: DictConfig) -> int:
    """Processes in the run: ``trainer.devices`` (an int, a list of ids, ``auto`` or -1) x ``trainer.num_nodes``."""
    devices = cfg.trainer.devices
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        per_node = len(devices)
    elif str(devices) in ("auto", "-1"):
        per_node = max(torch.cuda.device_count(), 1) if accelerator(cfg) == "gpu" else 1
    else:
        try:
            per_node = int(devices)
        except ValueError:
            raise UserError(f"trainer.devices={devices}: give a number of devices, a list of device ids, auto or -1") from None
        if per_node < 1:
            raise UserError(f"trainer.devices={devices}: give at least 1 (or -1 for all)")
    return per_node * int(cfg.trainer.num_nodes)


def device_batch(global_batch: int, world: int, max_device_batch: int | None = None, min_accumulation: int = 1) -> tuple[int, int]:
    """``(micro-batch per device, accumulation steps)`` such that ``micro x accumulation x world == global_batch``.

    Accumulation is the smallest number of steps, at least ``min_accumulation``, that divides the
    per-device share and keeps each micro-batch within ``max_device_batch``.
    """
    if global_batch % world:
        raise UserError(f"data.batch_size={global_batch} is the global batch and must split evenly over {world} devices: make it a multiple of {world}")
    share = global_batch // world
    accumulation = max(min_accumulation, math.ceil(share / max_device_batch) if max_device_batch else 1)
    while share % accumulation:
        accumulation += 1
    return share // accumulation, accumulation


def precision(cfg: DictConfig) -> str:
    """``trainer.precision``, checked; ``16-mixed`` on CPU becomes ``bf16-mixed`` (CPU autocast has no fp16), said once."""
    value = str(cfg.trainer.precision)
    if value not in PRECISIONS:
        raise UserError(f"trainer.precision={value} is not a precision; valid: {', '.join(PRECISIONS)}")
    if value in ("16-mixed", "16-true") and accelerator(cfg) == "cpu":
        replacement = value.replace("16", "bf16")
        log.warning("trainer.precision=%s on CPU becomes %s (CPUs have no fp16 autocast); bf16 is slow on CPUs without native bf16: prefer 32-true", value, replacement)
        return replacement
    return value


def check_strategy(cfg: DictConfig) -> None:
    """Refuse a strategy this machine cannot run, with what to use instead."""
    name = cfg.strategy.name
    if name not in STRATEGIES:
        raise UserError(f"strategy={name} is not known; valid: {', '.join(STRATEGIES)}")
    if name == "fsdp" and accelerator(cfg) == "cpu":
        raise UserError("strategy=fsdp shards over GPUs (NCCL) and does not run on CPU: use strategy=ddp here (gloo), fsdp on GPUs")
    if name == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise UserError("strategy=deepspeed needs the deepspeed package, which is not installed: pip install deepspeed (GPUs), or use strategy=fsdp")
        if accelerator(cfg) == "cpu":
            raise UserError("strategy=deepspeed runs on GPUs only: use strategy=ddp on CPU")


def build_strategy(cfg: DictConfig) -> str | Strategy:
    """The Lightning strategy object for ``cfg.strategy`` (its ``_target_`` and kwargs), or its name for ``auto``."""
    check_strategy(cfg)
    if "_target_" not in cfg.strategy:
        return cfg.strategy.name
    kwargs = OmegaConf.to_container(cfg.strategy, resolve=True)
    kwargs.pop("name")
    return instantiate(kwargs)


def for_devices(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` whose ``data.batch_size`` is the micro-batch one process loads, with
    ``trainer.accumulate_grad_batches`` and ``trainer.precision`` to match. The global batch stays
    ``cfg.data.batch_size``; the stages record it in ``run.json`` as ``global_batch_size``."""
    check_strategy(cfg)
    world = world_size(cfg)
    micro, accumulation = device_batch(int(cfg.data.batch_size), world, cfg.get("device_batch_size"), int(cfg.trainer.get("accumulate_grad_batches", 1)))
    out = copy.deepcopy(cfg)
    out.data.batch_size = micro
    out.trainer.accumulate_grad_batches = accumulation
    out.trainer.precision = precision(cfg)
    if world > 1 or accumulation > 1:
        log.info("global batch %d = %d devices x %d per device x %d accumulation steps", cfg.data.batch_size, world, micro, accumulation)
    return out
