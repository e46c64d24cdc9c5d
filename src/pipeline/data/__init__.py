"""Data: sources (hub, offline, local files), preparation into ``data/<name>/``, one DataModule."""

from pipeline.data.datamodule import DataModule, ImageTensorDataset

__all__ = ["DataModule", "ImageTensorDataset"]
