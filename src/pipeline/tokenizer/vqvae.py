"""The VQ-VAE tokenizer: encoder -> z_e -> quantizer -> z_q -> decoder, as a LightningModule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from pipeline.tokenizer.metrics import CodebookUsage
from pipeline.tokenizer.quantizer import QuantizerOutput, VectorQuantizer

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class VQVAE(L.LightningModule):
    """Image tokenizer trained with reconstruction (L1 + MSE) and commitment losses.

    Args:
        encoder: maps ``(B, C, H, W)`` in [-1, 1] to ``z_e (B, D, h, w)``.
        decoder: maps ``(B, D, h, w)`` back to ``(B, C, H, W)``.
        quantizer: EMA :class:`VectorQuantizer` over the D channels.
        l1_weight, mse_weight: weights of the two reconstruction terms.
        commitment_weight: weight of ||z_e - sg(z_q)||^2.
        optimizer: partial optimizer, completed with the parameters.
        scheduler: partial scheduler, completed with the optimizer and ``total_steps``.
        size: name of the preset it was built from (recorded for tags and the tokenizer file).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        quantizer: VectorQuantizer,
        l1_weight: float = 1.0,
        mse_weight: float = 1.0,
        commitment_weight: float = 0.25,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        size: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "decoder", "quantizer", "optimizer", "scheduler"])
        self.encoder, self.decoder, self.quantizer = encoder, decoder, quantizer
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.val_codes = CodebookUsage(quantizer.codebook_size, quantizer.num_quantizers)
        self.test_psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.test_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantization latents ``z_e (B, D, h, w)``."""
        return self.encoder(x)

    def quantize(self, z_e: torch.Tensor) -> QuantizerOutput:
        """Quantize ``z_e (B, D, h, w)``; ``quantized`` comes back in the same layout."""
        batch, dim, height, width = z_e.shape
        out = self.quantizer(z_e.flatten(2).transpose(1, 2))  # (B, h*w, D)
        quantized = out.quantized.transpose(1, 2).reshape(batch, dim, height, width)
        indices = out.indices.reshape(batch, height, width, *out.indices.shape[2:])
        return QuantizerOutput(quantized, indices, out.commitment_loss)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(z_q)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Decode code indices ``(B, h, w)`` (or ``(B, h, w, Q)``) to images."""
        batch, height, width = indices.shape[:3]
        vectors = self.quantizer.codes_to_vectors(indices.reshape(batch, height * width, -1))
        return self.decode(vectors.transpose(1, 2).reshape(batch, -1, height, width))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        quantized = self.quantize(self.encode(x))
        return self.decode(quantized.quantized), quantized

    def _losses(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, QuantizerOutput]:
        reconstruction, quantized = self(x)
        l1, mse = F.l1_loss(reconstruction, x), F.mse_loss(reconstruction, x)
        rec_loss = self.hparams.l1_weight * l1 + self.hparams.mse_weight * mse
        loss = rec_loss + self.hparams.commitment_weight * quantized.commitment_loss
        return {"loss": loss, "rec_loss": rec_loss, "commitment": quantized.commitment_loss}, reconstruction, quantized

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses, _, _ = self._losses(batch[0])
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True)
        return losses["loss"]

    def _score(self, x: torch.Tensor, psnr: PeakSignalNoiseRatio, ssim: StructuralSimilarityIndexMeasure) -> tuple[dict[str, torch.Tensor], QuantizerOutput]:
        """Losses on ``x``, and PSNR / SSIM updated on the [0, 1] range."""
        losses, reconstruction, quantized = self._losses(x)
        psnr(_to_unit(reconstruction), _to_unit(x))
        ssim(_to_unit(reconstruction), _to_unit(x))
        return losses, quantized

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        losses, quantized = self._score(batch[0], self.val_psnr, self.val_ssim)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, sync_dist=True)
        self.val_codes.update(quantized.indices)
        self.log_dict({"val/psnr": self.val_psnr, "val/ssim": self.val_ssim})

    def on_validation_epoch_end(self) -> None:
        stats = self.val_codes.compute()
        self.log_dict({"val/codebook_usage": stats["usage"], "val/perplexity": stats["perplexity"]})
        self.val_codes.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        losses, _ = self._score(batch[0], self.test_psnr, self.test_ssim)
        self.log("test/rec_loss", losses["rec_loss"], sync_dist=True)
        self.log_dict({"test/psnr": self.test_psnr, "test/ssim": self.test_ssim})

    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer_factory is None:
            raise ValueError("VQVAE needs an optimizer factory to train")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped: metrics are reported on the [0, 1] data range."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)
