"""``data=folder``: local files of any modality (detected by :mod:`pipeline.detect` unless ``modality=`` says it).

:func:`folder_datamodule` builds the data module of that modality from the options of
``conf/data/folder.yaml`` it understands.
"""

from __future__ import annotations

import inspect
from typing import Any

from pipeline.data.audio import AudioDataModule
from pipeline.data.datamodule import DataModule
from pipeline.data.image import ImageDataModule
from pipeline.data.text import TextDataModule
from pipeline.errors import UserError

MODULES: dict[str, type[DataModule]] = {"image": ImageDataModule, "audio": AudioDataModule, "text": TextDataModule}


def folder_datamodule(modality: str, **options: Any) -> DataModule:
    """The ``modality`` data module, given the options its constructor takes (the folder config holds every modality's)."""
    if modality not in MODULES:
        raise UserError(f"data=folder: modality={modality} has no data module; valid: {', '.join(MODULES)}")
    module = MODULES[modality]
    accepted = inspect.signature(module.__init__).parameters
    return module(modality=modality, **{key: value for key, value in options.items() if key in accepted})
