"""Stage one: the VQ-VAE tokenizer."""

from pipeline.tokenizer.io import load_tokenizer, save_tokenizer
from pipeline.tokenizer.networks import ImageDecoder, ImageEncoder
from pipeline.tokenizer.quantizer import QuantizerOutput, VectorQuantizer
from pipeline.tokenizer.vqvae import VQVAE

__all__ = ["VQVAE", "ImageDecoder", "ImageEncoder", "QuantizerOutput", "VectorQuantizer", "load_tokenizer", "save_tokenizer"]
