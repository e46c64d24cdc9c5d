"""``stage=eval``: score a DiT run with the reference classifier and write ``eval.json``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from pipeline.diffusion.latents import data_fingerprint
from pipeline.evaluation import classifier_frechet_distance, conditional_accuracy, load_or_train_classifier, true_fid
from pipeline.fileio import write_json
from pipeline.media import to_uint8
from pipeline.stages.common import build_loggers, record_start, stage_dir, start_run, tracked, wandb_logger, wandb_run_path
from pipeline.stages.generation import load_generator

log = logging.getLogger("pipeline")


@torch.no_grad()
def reconstruct(tokenizer: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 images through the tokenizer (encode, quantize, decode) and back to uint8."""
    device = next(tokenizer.parameters()).device
    return torch.cat([torch.from_numpy(to_uint8(tokenizer(chunk.to(device).float().div(127.5).sub(1.0))[0])) for chunk in images.split(batch_size)])


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Conditional accuracy and classifier Frechet distance of samples, beside real-vs-real and reconstruction-vs-real."""
    start = time.perf_counter()
    generator = load_generator(cfg)
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup()
    train, test = data.splits["train"], data.splits["test"]
    classifier, record = load_or_train_classifier(
        stage_dir(cfg, "classifier"), train, test, int(cfg.data.num_classes), data_fingerprint(data.source_record, hflip=False),
        epochs=cfg.eval.classifier_epochs, seed=cfg.seed,
    )
    run_dir, _, wandb_id = start_run(cfg)
    loggers = build_loggers(cfg, run_dir, wandb_id)
    record_start(cfg, run_dir, loggers, wandb_id, dit=str(generator.dit_path), tokenizer=str(generator.tokenizer_path))
    with tracked(run_dir, loggers):
        num = min(int(cfg.eval.num_samples), len(test))
        real = test.images[:num]
        labels = test.labels[:num] if generator.dit.model.num_classes else None
        chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:num]
        real_train = train.images[chosen]
        sample_start = time.perf_counter()
        fake = torch.from_numpy(to_uint8(generator.samples(labels, num, cfg, cfg.seed)))
        sample_seconds = time.perf_counter() - sample_start
        fid, fid_note = true_fid(real, fake, cfg.eval.inception_weights)
        scores = {
            "eval/fd_classifier": classifier_frechet_distance(classifier, real, fake),
            "eval/fd_classifier_real_vs_real": classifier_frechet_distance(classifier, real, real_train),
            "eval/fd_classifier_recon_vs_real": classifier_frechet_distance(classifier, real, reconstruct(generator.tokenizer, real_train)),
            "eval/classifier_test_accuracy": record["test_accuracy"],
        }
        if labels is not None:
            scores["eval/cond_accuracy"] = conditional_accuracy(classifier, fake, labels)
        if fid is not None:
            scores["eval/fid"] = fid
        report = {
            **scores, "fid_note": fid_note, "num_samples": num, "sampler": cfg.sample.sampler or generator.dit.objective.default_sampler,
            "steps": cfg.sample.steps, "cfg_scale": cfg.sample.cfg_scale, "dit": str(generator.dit_path), "tokenizer": str(generator.tokenizer_path),
            "classifier": record.get("path"), "sampling_seconds_per_image": sample_seconds / num, "seconds": time.perf_counter() - start,
        }
        eval_path = write_json(Path(run_dir.path) / "eval.json", report)
        for logger in loggers:
            logger.log_metrics(scores)
        if (logger := wandb_logger(loggers)) is not None:
            logger.experiment.summary.update(scores)
        run_dir.update(status="finished", metrics=scores, eval=str(eval_path))
        run_dir.mark_latest()
    log.info("eval: %s", fid_note)
    return {"run_dir": run_dir.path, "eval": eval_path, "dit": generator.dit_path, "wandb_run": wandb_run_path(run_dir), "metrics": scores}
