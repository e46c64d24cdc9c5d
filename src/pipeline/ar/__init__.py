"""The autoregressive baseline prior: a decoder-only transformer over the tokenizer's code indices."""

from pipeline.ar.codes import CodeDataModule, CodeDataset, quantize_to_codes
from pipeline.ar.io import LoadedAR, load_ar, save_ar
from pipeline.ar.model import ARPrior
from pipeline.ar.module import ARModule

__all__ = ["ARModule", "ARPrior", "CodeDataModule", "CodeDataset", "LoadedAR", "load_ar", "quantize_to_codes", "save_ar"]
