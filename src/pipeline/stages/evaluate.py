"""``stage=eval``: score a DiT run with the modality's evaluator and write ``eval.json``."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from pipeline.data.paired import PromptSource
from pipeline.fileio import write_json
from pipeline.outputs import image_data_name, stage_dir
from pipeline.stages.common import build_loggers, record_input, record_start, start_run, tracked, wandb_logger, wandb_run_path
from pipeline.stages.generation import Generator, load_generator


def finite_or_none(value: Any) -> Any:
    """NaN and infinities become JSON null (``eval.json`` stays strict JSON); everything else is kept."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def heldout_prompts(generator: Generator, source: PromptSource, num: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``num`` conditions cycling through the held-out (test) prompts, their digits, and what ``eval.json`` says of them:
    ``eval/cond_accuracy`` is then the share of images the reference classifier assigns to their prompt's digit."""
    examples, digits = source.examples("test")
    order = torch.arange(num) % len(digits)
    info = {"condition": generator.prompts.kind, "heldout_prompts": len(digits), "prompt_tokenizer": str(generator.prompts.tokenizer_path)}
    return generator.conditions(examples)[order], digits[order], info


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Generate ``eval.num_samples`` examples (capped at the test split) and score them beside real and reconstructed data."""
    start = time.perf_counter()
    media, evaluator = instantiate(cfg.modality.media), instantiate(cfg.modality.evaluator)  # a bad setting fails before any loading
    paired = instantiate(cfg.data)
    generator = load_generator(cfg, paired)
    data = getattr(paired, "image", paired)  # what is generated, scored against its reference classifier
    data.prepare_data()
    data.setup()
    prepared = evaluator.prepare(data, stage_dir(cfg, "classifier", image_data_name(cfg)), cfg)
    run_dir, _, wandb_id = start_run(cfg)
    loggers = build_loggers(cfg, run_dir, wandb_id)
    record_start(cfg, run_dir, loggers, wandb_id, **{generator.kind: str(generator.path)}, tokenizer=str(generator.tokenizer_path))
    record_input(loggers, run_dir, generator.kind, cfg.data.name, generator.path)
    with tracked(run_dir, loggers):
        test = data.splits["test"]
        num = min(int(cfg.eval.num_samples), len(test))
        if generator.prompts is not None:
            conditions, labels, prompt_info = heldout_prompts(generator, paired.prompt_source, num)
        else:
            conditions = labels = test.labels[:num] if generator.num_classes else None
            prompt_info = {}
        sample_start = time.perf_counter()
        generated = media.to_data(generator.samples(conditions, num, cfg, cfg.seed))
        sample_seconds = time.perf_counter() - sample_start
        scores = evaluator.score(generated, labels, data, generator.tokenizer, media, cfg.seed)
        report = {
            **scores, **prepared, **evaluator.notes(), **prompt_info, "num_samples": num,
            **generator.settings(cfg),
            generator.kind: str(generator.path), "tokenizer": str(generator.tokenizer_path),
            "sampling_seconds_per_example": sample_seconds / num, "seconds": time.perf_counter() - start,
        }
        eval_path = write_json(Path(run_dir.path) / "eval.json", {k: finite_or_none(v) for k, v in report.items()})
        for logger in loggers:
            logger.log_metrics(scores)
        if (logger := wandb_logger(loggers)) is not None:
            logger.experiment.summary.update(scores)
        run_dir.update(status="finished", metrics=scores, eval=str(eval_path))
        run_dir.mark_latest()
    return {"run_dir": run_dir.path, "eval": eval_path, generator.kind: generator.path, "wandb_run": wandb_run_path(run_dir), "metrics": scores}
