"""Stage two's LightningModule: a DiT trained on cached, normalized latents, with an EMA copy."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from pipeline.diffusion.alignment import PromptAlignment
from pipeline.diffusion.dit import DiT
from pipeline.diffusion.ema import ema_model
from pipeline.diffusion.objectives import Objective
from pipeline.diffusion.prompt import is_present
from pipeline.optim import optimizer_config

log = logging.getLogger("pipeline")
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class DiffusionModule(L.LightningModule):
    """Trains ``model`` with ``objective``; the EMA weights are what sampling and evaluation use.

    Args:
        model: the :class:`DiT` (its input shape matches the latent cache).
        objective: :class:`RectifiedFlow` or :class:`DDPM`; one that predicts codes needs a DiT with a code head.
        latent_mean, latent_std: per-channel statistics of the cache, kept with the weights for decoding
            (replaced by the datamodule's ``stats`` at setup when it has them).
        optimizer, scheduler: partials, completed with the parameters / the optimizer and ``total_steps``.
        ema_decay: decay of the weight average, ramped up as ``(1 + n) / (ema_warmup + n)`` (:func:`~pipeline.diffusion.ema.ema_update`).
        ema_warmup: the ramp's constant: smaller averages over more of the run.
        class_dropout: share of conditions (labels or prompts) replaced by the null condition, which is what makes guidance possible.
        compile: ``torch.compile`` the DiT for training where it works.
        alignment: for a prompt DiT, a :class:`PromptAlignment` whose loss, times ``alignment_weight``, joins the
            diffusion loss (``train/align_loss``): it teaches the prompt encoder which image a prompt asks for.
    """

    def __init__(
        self,
        model: DiT,
        objective: Objective,
        latent_mean: torch.Tensor,
        latent_std: torch.Tensor,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        ema_decay: float = 0.999,
        ema_warmup: float = 10.0,
        class_dropout: float = 0.1,
        compile: bool = False,
        alignment: PromptAlignment | None = None,
        alignment_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "objective", "latent_mean", "latent_std", "optimizer", "scheduler", "alignment"])
        if alignment is not None and model.prompt_encoder is None:
            raise ValueError("alignment is for a DiT conditioned on prompts")
        if objective.predicts_codes != (model.code_head is not None):
            raise ValueError("an objective that predicts codes needs a DiT with codebook_size > 0, and only such an objective can train one")
        self.model, self.objective, self.alignment = model, objective, alignment
        self.ema = ema_model(model, ema_decay, ema_warmup)
        self.prompt_tokens: torch.Tensor | None = None
        if alignment is not None:  # after the EMA copy was made: the copy must not carry the hook
            model.prompt_encoder.register_forward_hook(self._keep_prompt_tokens)
        self.register_buffer("latent_mean", latent_mean.float().clone())
        self.register_buffer("latent_std", latent_std.float().clone())
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.compiled = False
        self.rng_restored = False

    def setup(self, stage: str) -> None:
        """Take the latent statistics from the data (a :class:`LatentDataModule`), also into a code head,
        of the model and of its EMA copy alike, whose code vectors live in the normalized space."""
        stats = getattr(self.trainer.datamodule, "stats", None) if self._trainer is not None else None
        if stats is not None:
            self.latent_mean.copy_(stats[0])
            self.latent_std.copy_(stats[1])
            for model in (self.model, self.ema.module):
                if model.code_head is not None:
                    model.code_head.set_stats(self.latent_mean, self.latent_std)

    def on_fit_start(self) -> None:
        """Compile if asked, here because the model is on its device only now (the trial compile runs there).

        And give each rank its own noise and times (rank 0 keeps the stream a single process would
        draw): with one seed everywhere, every rank would noise its share of the batch identically.
        """
        if self.hparams.compile and not self.compiled:
            self.compiled = compile_in_place(self.model)
        if self.global_rank > 0 and not self.rng_restored:
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every rank's random state (noise, times, label dropout), so a resumed run draws what an uninterrupted one would."""
        checkpoint["rng_states"] = {"cpu": self._gathered(torch.get_rng_state())}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = self._gathered(torch.cuda.get_rng_state())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states", {})
        rank = self.global_rank if self._trainer is not None else 0
        if "cpu" in states and rank < len(states["cpu"]):
            torch.set_rng_state(states["cpu"][rank].cpu())
            if torch.cuda.is_available() and "cuda" in states:
                torch.cuda.set_rng_state(states["cuda"][rank].cpu())
            self.rng_restored = True

    def _gathered(self, state: torch.Tensor) -> torch.Tensor:
        """``(world, ...)``: ``state`` as every rank holds it, in rank order."""
        if self._trainer is None or self.trainer.world_size == 1:
            return state.unsqueeze(0)
        return self.all_gather(state.to(self.device)).cpu()

    def drop_labels(self, y: torch.Tensor) -> torch.Tensor | None:
        """The batch's conditions (class labels or prompts) with ``class_dropout`` of them made null."""
        if not self.model.conditional:
            return None
        drop = torch.rand(y.shape[0], device=y.device) < self.hparams.class_dropout
        return self.model.drop_condition(y, drop)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        latents, labels = batch
        conditions = self.drop_labels(labels)
        loss = self.objective.loss(self.model, latents, conditions)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # the global batch's mean
        if self.alignment is None or self.prompt_tokens is None:
            return loss
        align = self.alignment(self.prompt_tokens.mean(dim=1), latents, scored=is_present(conditions))  # not the prompts dropped to null
        self.log("train/align_loss", align, sync_dist=True)
        return loss + self.hparams.alignment_weight * align

    def _keep_prompt_tokens(self, encoder: torch.nn.Module, inputs: Any, outputs: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Keep the conditioning tokens of the training forward: the alignment loss reads them rather than encoding the prompts twice."""
        self.prompt_tokens = outputs[0] if encoder.training else None

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then the EMA: once per optimizer step (not per accumulated micro-batch),
        and before any callback can checkpoint the step (a checkpoint must hold the EMA of its step)."""
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.model)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """The EMA model's loss on held-out latents, with the same noise at every validation."""
        latents, labels = batch
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(batch_idx)
            loss = self.objective.loss(self.ema.module, latents, labels if self.model.conditional else None)
        self.log("val/loss", loss, sync_dist=True, prog_bar=True)

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip here under bf16-mixed; everywhere else Lightning's own path.

        Lightning's mixed-precision plugin refuses any clipping with a fused optimizer (the default
        here), which only fp16's scaled gradients make unsafe; bf16-mixed has no gradient scaler
        (Lightning-AI/pytorch-lightning#21435).
        """
        plugin = self.trainer.precision_plugin
        if not gradient_clip_val or type(plugin) is not MixedPrecision or plugin.scaler is not None:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def configure_optimizers(self) -> dict[str, Any]:
        parameters = [*self.model.parameters(), *(self.alignment.parameters() if self.alignment is not None else [])]
        return optimizer_config(self.optimizer_factory, self.scheduler_factory, parameters, int(self.trainer.estimated_stepping_batches), type(self).__name__)


def compile_in_place(model: DiT) -> bool:
    """``model.compile()`` when a trial compile of one forward succeeds; otherwise say why and stay eager."""
    try:
        probe = torch.compile(model)
        x = torch.zeros(2, model.in_channels, *model.spatial, device=next(model.parameters()).device)
        probe(x, torch.zeros(2, device=x.device), model.empty_condition(2, x.device))
    except Exception as err:  # a missing compiler, an unsupported backend: training still works eagerly
        log.warning("compile=true: torch.compile does not work here (%s); training without it", str(err).splitlines()[0][:200])
        return False
    model.compile()
    log.info("compile=true: the DiT is compiled with torch.compile")
    return True
