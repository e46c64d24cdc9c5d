"""``stage=sample``: draw examples from a trained DiT into ``samples.npz`` and the modality's media files."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from pipeline.diffusion import class_labels
from pipeline.media import save_npz
from pipeline.stages.common import build_loggers, record_input, record_start, start_run, tracked, wandb_logger, wandb_run_path
from pipeline.stages.generation import Generator, load_generator


def class_rows(samples: torch.Tensor, labels: torch.Tensor | None, num_classes: int, width: int = 8) -> tuple[list[torch.Tensor], list[str]]:
    """Rows and their names: one per class, or rows of ``width`` when unconditional."""
    if labels is None:
        return list(samples.split(width)), [f"samples {i * width}-{min((i + 1) * width, len(samples)) - 1}" for i in range(math.ceil(len(samples) / width))]
    return [samples[labels == c] for c in range(num_classes)], [f"class {c}" for c in range(num_classes)]


def prompt_conditions(cfg: DictConfig, generator: Generator, data: Any) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """A prompt DiT's conditions for ``sample.num`` samples: ``sample.prompt`` for all of them, or else
    one held-out (test) prompt per digit, digits in turn (those the held-out prompts have: a table's test rows need not
    hold every one); their digits (None for a user's prompt) and a caption."""
    source = data.prompt_source
    num = cfg.sample.num
    if cfg.sample.prompt:
        condition = generator.conditions(source.load(str(cfg.sample.prompt)))
        return condition.expand(num, *condition.shape[1:]), None, f"prompt {cfg.sample.prompt!r}"
    examples, digits = source.examples("test")
    present = digits.unique()
    picks = (torch.arange(num) % len(present)).sort().values
    first = torch.stack([torch.nonzero(digits == d).flatten()[0] for d in present])
    return generator.conditions(examples[first])[picks], present[picks], "one held-out prompt per digit"


def sample(cfg: DictConfig) -> dict[str, Any]:
    """Write ``samples.npz`` (the modality's arrays, ``labels`` int64 when conditional) and the media files."""
    data = instantiate(cfg.data)
    generator = load_generator(cfg, data)
    media = instantiate(cfg.modality.media)
    num_classes, caption = generator.num_classes, generator.describe(cfg)
    if generator.prompts is not None:  # a prompt that cannot be read is refused before a run starts
        conditions, labels, what = prompt_conditions(cfg, generator, data)
        num_classes, caption = (data.num_classes if labels is not None else 0), f"{what}, {caption}"
    else:
        conditions = labels = class_labels(cfg.sample.num, num_classes)
    run_dir, _, wandb_id = start_run(cfg)
    loggers = build_loggers(cfg, run_dir, wandb_id)
    record_start(cfg, run_dir, loggers, wandb_id, **{generator.kind: str(generator.path)}, tokenizer=str(generator.tokenizer_path), prompt=cfg.sample.prompt)
    record_input(loggers, run_dir, generator.kind, cfg.data.name, generator.path)
    with tracked(run_dir, loggers):
        samples = media.to_data(generator.samples(conditions, cfg.sample.num, cfg, cfg.seed))
        arrays = media.arrays(samples)
        if labels is not None:
            arrays["labels"] = labels.numpy().astype(np.int64)
        npz_path = save_npz(run_dir.path / "samples.npz", **arrays)
        rows, names = class_rows(samples, labels, num_classes)
        files = media.save_rows(rows, names, run_dir.path / media.sample_stem)
        logger = wandb_logger(loggers)
        if logger is not None:
            media.log(logger, "samples/grid", rows, names, files, None, caption)
        run_dir.update(status="finished", samples=str(npz_path), grid=str(files[0]), num=cfg.sample.num)
        run_dir.mark_latest()
    return {"run_dir": run_dir.path, "grid": files[0], "samples": npz_path, generator.kind: generator.path, "wandb_run": wandb_run_path(run_dir)}
