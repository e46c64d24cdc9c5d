"""The AR prior's data: the latent cache's continuous latents quantized to code indices, once per run.

Stage two's latent cache (``outputs/<data>/latents/<tokenizer-id>/``) holds ``z_e``; the nearest
codes of the same frozen tokenizer are what the tokenizer would decode, so the AR prior and the
DiT learn from exactly the same examples (flips included where the data allow them).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.diffusion.latents import LatentDataModule
from pipeline.errors import UserError
from pipeline.tokenizer import VQVAE, load_tokenizer


@torch.no_grad()
def quantize_to_codes(tokenizer: VQVAE, latents: np.ndarray, batch_size: int = 1024) -> torch.Tensor:
    """Cached latents ``(N, views, D, *grid)`` -> code indices ``(N, views, positions)`` (int64, raster order)."""
    count, views = latents.shape[:2]
    out = []
    for start in range(0, count, batch_size):
        block = torch.from_numpy(np.asarray(latents[start:start + batch_size], dtype=np.float32))
        indices = tokenizer.quantize(block.flatten(0, 1)).indices
        if indices.ndim != block.ndim - 2:
            raise UserError("the AR prior reads one code per position: its tokenizer must have one codebook (vqvae.quantizer.num_quantizers=1)")
        out.append(indices.reshape(len(block), views, -1))
    return torch.cat(out)


class CodeDataset(Dataset):
    """Code sequences ``(N, views, L)`` with labels; each item is one view (the original or its flip) at random."""

    def __init__(self, codes: torch.Tensor, labels: torch.Tensor) -> None:
        self.codes, self.labels = codes, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.tensor(indices)
        views = self.codes.shape[1]
        chosen = torch.randint(views, (len(order),)) if views > 1 else torch.zeros(len(order), dtype=torch.long)
        return list(zip(self.codes[order, chosen].unbind(0), self.labels[order].unbind(0)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]


class CodeDataModule(L.LightningDataModule):
    """Code sequences of the latent cache of ``latents`` (built as stage two builds it), quantized by the tokenizer at ``tokenizer_path``."""

    def __init__(self, latents: LatentDataModule, tokenizer_path: str | Path) -> None:
        super().__init__()
        self.latents, self.tokenizer_path = latents, Path(tokenizer_path)
        self.splits: dict[str, CodeDataset] = {}

    @property
    def tokenizer_id(self) -> str:
        return self.latents.tokenizer_id

    @property
    def cache_dir(self) -> Path:
        return self.latents.cache_dir

    def prepare_data(self) -> None:
        self.latents.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.latents.setup(stage)
        tokenizer = load_tokenizer(self.tokenizer_path)
        for split, dataset in self.latents.splits.items():
            self.splits[split] = CodeDataset(quantize_to_codes(tokenizer, dataset.latents), dataset.labels)

    def train_dataloader(self) -> DataLoader:
        return self.latents.training_loader(self.splits["train"], self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self.latents.validation_loader(self.splits["val"])
