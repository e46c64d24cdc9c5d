"""``stage=sample``: draw images from a trained DiT into ``samples.npz`` and a PNG grid."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from pipeline.diffusion import class_labels
from pipeline.errors import UserError
from pipeline.fileio import atomic_write
from pipeline.media import image_grid, save_png, to_uint8
from pipeline.stages.common import build_loggers, record_start, start_run, tracked, wandb_logger, wandb_run_path
from pipeline.stages.generation import load_generator


def save_npz(path: Any, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def class_rows(images: torch.Tensor, labels: torch.Tensor | None, num_classes: int, width: int = 8) -> list[torch.Tensor]:
    """Grid rows: one per class (padded with blank tiles), or rows of ``width`` when unconditional."""
    if labels is None:
        rows = math.ceil(len(images) / width)
        padded = torch.cat([images, torch.ones(rows * width - len(images), *images.shape[1:])])
        return list(padded.view(rows, width, *images.shape[1:]))
    columns = max(int((labels == c).sum()) for c in range(num_classes))
    blank = torch.ones(columns, *images.shape[1:])
    return [torch.cat([images[labels == c], blank])[:columns] for c in range(num_classes)]


def sample(cfg: DictConfig) -> dict[str, Any]:
    """Write ``samples.npz`` (``images`` uint8 N x C x H x W, ``labels`` int64 when conditional) and ``grid.png``."""
    if cfg.sample.num < 1:
        raise UserError(f"sample.num must be at least 1 (got {cfg.sample.num})")
    generator = load_generator(cfg)
    num_classes = generator.dit.model.num_classes
    run_dir, _, wandb_id = start_run(cfg)
    loggers = build_loggers(cfg, run_dir, wandb_id)
    record_start(cfg, run_dir, loggers, wandb_id, dit=str(generator.dit_path), tokenizer=str(generator.tokenizer_path))
    with tracked(run_dir, loggers):
        labels = class_labels(cfg.sample.num, num_classes)
        images = generator.images(labels, cfg.sample.num, cfg, cfg.seed)
        arrays = {"images": to_uint8(images)}
        if labels is not None:
            arrays["labels"] = labels.numpy().astype(np.int64)
        npz_path, grid_path = run_dir.path / "samples.npz", run_dir.path / "grid.png"
        save_npz(npz_path, **arrays)
        save_png(image_grid(class_rows(images, labels, num_classes)), grid_path)
        logger = wandb_logger(loggers)
        if logger is not None:
            caption = f"{cfg.sample.steps} {cfg.sample.sampler or generator.dit.objective.default_sampler} steps, guidance {cfg.sample.cfg_scale}"
            logger.log_image("samples/grid", [str(grid_path)], caption=[caption])
        run_dir.update(status="finished", samples=str(npz_path), grid=str(grid_path), num=cfg.sample.num)
        run_dir.mark_latest()
    return {"run_dir": run_dir.path, "grid": grid_path, "samples": npz_path, "dit": generator.dit_path, "wandb_run": wandb_run_path(run_dir)}
