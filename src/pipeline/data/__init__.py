"""Data: sources (hub, offline, local files), preparation into ``data/<name>/``, one data module per modality."""

from pipeline.data.audio import AudioDataModule, AudioTensorDataset
from pipeline.data.datamodule import DataModule
from pipeline.data.image import ImageDataModule, ImageTensorDataset
from pipeline.data.paired import AudioPrompts, PairedData, TextPrompts
from pipeline.data.paired_table import TableTextPrompts, TextColumnData
from pipeline.data.text import ByteSequenceDataset, TextDataModule

__all__ = [
    "AudioDataModule", "AudioPrompts", "AudioTensorDataset", "ByteSequenceDataset", "DataModule", "ImageDataModule", "ImageTensorDataset", "PairedData",
    "TableTextPrompts", "TextColumnData", "TextDataModule", "TextPrompts",
]
