"""Turning examples into files on disk and W&B media, one writer per modality (``modality.media``)."""

from pipeline.media.audio import AudioMedia, save_wav
from pipeline.media.base import Media, save_npz
from pipeline.media.image import ImageMedia, image_grid, save_png, to_uint8
from pipeline.media.text import TextMedia

__all__ = ["AudioMedia", "ImageMedia", "Media", "TextMedia", "image_grid", "save_npz", "save_png", "save_wav", "to_uint8"]
