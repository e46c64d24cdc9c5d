"""The VQ-VAE tokenizer of every modality: encoder -> z_e -> quantizer -> z_q -> decoder, as a LightningModule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from pipeline.tokenizer.corruption import CodeCorruption
from pipeline.tokenizer.metrics import CodebookUsage
from pipeline.tokenizer.quantizer import QuantizerOutput, VectorQuantizer

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class VQVAE(L.LightningModule):
    """Tokenizer for any modality: encoder -> z_e -> quantizer -> z_q -> decoder, trained with the
    modality's reconstruction loss plus the commitment loss.

    Args:
        encoder: maps a batch ``x`` to ``z_e (B, D, *spatial)`` (a 2-D grid for images, 1-D for audio and text).
        decoder: maps ``(B, D, *spatial)`` back to the modality's output (data in [-1, 1], or byte logits).
        quantizer: EMA :class:`VectorQuantizer` over the D channels of every latent position.
        reconstruction: the modality's loss and metrics (:mod:`pipeline.tokenizer.reconstruction`).
        commitment_weight: weight of ||z_e - sg(z_q)||^2.
        optimizer: partial optimizer, completed with the parameters.
        scheduler: partial scheduler, completed with the optimizer and ``total_steps``.
        size: name of the preset it was built from (recorded for tags and the tokenizer file).
        code_corruption: in training, the decoder reads the codes with some swapped for others (a denoising
            decoder, robust to a prior's slips; :mod:`pipeline.tokenizer.corruption`); None: the codes as they are.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        quantizer: VectorQuantizer,
        reconstruction: nn.Module,
        commitment_weight: float = 0.25,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        size: str | None = None,
        code_corruption: CodeCorruption | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "decoder", "quantizer", "reconstruction", "optimizer", "scheduler", "code_corruption"])
        self.encoder, self.decoder, self.quantizer, self.reconstruction = encoder, decoder, quantizer, reconstruction
        self.code_corruption = code_corruption
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.val_metrics = reconstruction.metrics().clone(prefix="val/")
        self.test_metrics = reconstruction.metrics().clone(prefix="test/")
        self.val_codes = CodebookUsage(quantizer.codebook_size, quantizer.num_quantizers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantization latents ``z_e (B, D, *spatial)``."""
        return self.encoder(x)

    def quantize(self, z_e: torch.Tensor) -> QuantizerOutput:
        """Quantize ``z_e (B, D, *spatial)``; ``quantized`` comes back in the same layout, ``indices`` as ``(B, *spatial[, Q])``."""
        batch, dim, *spatial = z_e.shape
        out = self.quantizer(z_e.flatten(2).transpose(1, 2))  # (B, positions, D)
        quantized = out.quantized.transpose(1, 2).reshape(batch, dim, *spatial)
        indices = out.indices.reshape(batch, *spatial, *out.indices.shape[2:])
        return QuantizerOutput(quantized, indices, out.commitment_loss)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(z_q)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Decode code indices ``(B, *spatial)`` (or ``(B, *spatial, Q)`` with residual quantization)."""
        ndim = self.encoder.spatial_ndim
        batch, spatial = indices.shape[0], indices.shape[1 : 1 + ndim]
        vectors = self.quantizer.codes_to_vectors(indices.reshape(batch, -1, *indices.shape[1 + ndim :]))
        return self.decode(vectors.transpose(1, 2).reshape(batch, -1, *spatial))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        quantized = self.quantize(self.encode(x))
        return self.decode(quantized.quantized), quantized

    def _corrupted(self, quantized: QuantizerOutput) -> torch.Tensor:
        """The decoder's input with some codes swapped by ``code_corruption``: ``(B, D, *spatial)``; the encoder
        learns only through the codes kept."""
        batch, dim, *spatial = quantized.quantized.shape
        flat = quantized.quantized.flatten(2).transpose(1, 2)
        indices = quantized.indices.reshape(batch, -1, *quantized.indices.shape[1 + len(spatial):])
        corrupted, swapped = self.code_corruption(indices, self.quantizer)
        return torch.where(swapped.unsqueeze(-1), corrupted.to(flat), flat).transpose(1, 2).reshape(batch, dim, *spatial)

    def _losses(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, QuantizerOutput]:
        quantized = self.quantize(self.encode(x))
        corrupt = self.training and self.code_corruption is not None
        output = self.decode(self._corrupted(quantized) if corrupt else quantized.quantized)
        losses = self.reconstruction.loss(output, x)
        loss = losses["rec_loss"] + self.hparams.commitment_weight * quantized.commitment_loss
        return {"loss": loss, **losses, "commitment": quantized.commitment_loss}, output, quantized

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses, _, _ = self._losses(batch[0])
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, sync_dist=True)  # the global batch's mean
        return losses["loss"]

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        losses, output, quantized = self._losses(batch[0])
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, sync_dist=True)
        self.reconstruction.update(self.val_metrics, output, batch[0])
        self.val_codes.update(quantized.indices)
        self.log_dict(self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        stats = self.val_codes.compute()
        self.log_dict({"val/codebook_usage": stats["usage"], "val/perplexity": stats["perplexity"]})
        self.val_codes.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        losses, output, _ = self._losses(batch[0])
        self.log("test/rec_loss", losses["rec_loss"], sync_dist=True)
        self.reconstruction.update(self.test_metrics, output, batch[0])
        self.log_dict(self.test_metrics)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the codebooks' generators, so a resumed run re-seeds dead codes as an uninterrupted one would."""
        checkpoint["codebook_generators"] = [book.generator_state for book in self.quantizer.codebooks]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for book, state in zip(self.quantizer.codebooks, checkpoint.get("codebook_generators", [])):
            book.generator_state = state

    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer_factory is None:
            raise ValueError("VQVAE needs an optimizer factory to train")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

