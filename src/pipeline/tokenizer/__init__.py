"""Stage one: the VQ-VAE tokenizer, its networks per modality and their reconstruction objectives."""

from pipeline.tokenizer.corruption import CodeCorruption
from pipeline.tokenizer.io import load_tokenizer, save_tokenizer
from pipeline.tokenizer.networks import ImageDecoder, ImageEncoder
from pipeline.tokenizer.networks1d import AudioDecoder, AudioEncoder, TextDecoder, TextEncoder
from pipeline.tokenizer.quantizer import QuantizerOutput, VectorQuantizer
from pipeline.tokenizer.reconstruction import AudioReconstruction, ImageReconstruction, TextReconstruction
from pipeline.tokenizer.vqvae import VQVAE

__all__ = [
    "VQVAE", "AudioDecoder", "AudioEncoder", "AudioReconstruction", "CodeCorruption", "ImageDecoder", "ImageEncoder", "ImageReconstruction",
    "QuantizerOutput", "TextDecoder", "TextEncoder", "TextReconstruction", "VectorQuantizer", "load_tokenizer", "save_tokenizer",
]
