"""Paired data from one table: each row an image, its prompts in other columns (text, audio) and a label.

The table is a Hugging Face dataset id, a local dataset folder, or one local ``.csv`` / ``.jsonl`` /
``.parquet`` file whose image and audio columns may name files relative to it. Each column is
prepared by the data module of its modality under its own name, all from the same rows with the
same seeded split, so row ``i`` of a split is one example in every column;
:class:`~pipeline.data.paired.PairedData` checks the settings agree and stage two checks the labels
do. The label is what the evaluation's reference classifier scores a generated image against.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.datamodule import DataModule
from pipeline.data.paired import WrittenPromptFormat, WrittenPrompts
from pipeline.data.sources import RawData, class_names, load_hub_splits
from pipeline.data.text import ByteSequenceDataset


def load_table_texts(hub_id: str, text_column: str, label_column: str, cache_dir: Path, timeout: float) -> RawData:
    """One text per row (and its label) of every split of the table; an empty cell stays empty (and is refused)."""
    splits = load_hub_splits(hub_id, {text_column: "prompts.text.data.text_column", label_column: "image.label_column"}, cache_dir, timeout)
    raw = {
        name: (["" if text is None else str(text) for text in split[text_column]], np.asarray(split[label_column], dtype=np.int64))
        for name, split in splits.items()
    }
    return RawData(raw, f"table {hub_id}, column {text_column}", class_names(splits["train"], label_column))


class TextColumnData(DataModule):
    """The written prompts of a table's text column, one per row, stored as UTF-8 bytes padded to ``seq_length``.

    Args (besides :class:`DataModule`'s; no offline source, no ``path``: the table is the source):
        text_column: the table's text column.
        seq_length: bytes per prompt (the text tokenizer's example length).
        max_bytes: the longest prompt; a longer one is refused with its row's text.
    """

    column = "text"

    def __init__(
        self, name: str, hub_id: str, text_column: str = "text", label_column: str = "label", seq_length: int = 128, max_bytes: int = 32,
        modality: str = "text", num_classes: int = 10, val_size: int = 500, test_size: int = 500, hub_timeout: float = 5.0, seed: int = 0,
        data_dir: str = "data", how_to_fix: str = "check data.table",
    ) -> None:
        self.format = WrittenPromptFormat(seq_length, max_bytes)
        super().__init__(
            name, modality, hub_id, label_column, None, None, num_classes, 1, 0, val_size, test_size, hub_timeout, seed, data_dir, how_to_fix,
            spec=dict(text_column=text_column, seq_length=seq_length, max_bytes=max_bytes),
        )

    def sources(self) -> list[tuple[str, Callable[[], RawData]]]:
        spec = self.spec
        return [("table", lambda: load_table_texts(spec["hub_id"], spec["text_column"], spec["label_column"], self.data_dir / ".hf_cache", spec["hub_timeout"]))]

    def to_examples(self, items: Any, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        encoded = [self.format.encode(text) for text in items]
        return torch.stack(encoded).to(torch.uint8).numpy(), labels

    def dataset(self, examples: torch.Tensor, labels: torch.Tensor, split: str) -> ByteSequenceDataset:
        return ByteSequenceDataset(examples, labels)


class TableTextPrompts(WrittenPrompts):
    """Written prompts from a table's text column: the prompt of image ``i`` is the text of row ``i``.

    Args:
        data: the :class:`TextColumnData` of that column.
    """

    def __init__(self, data: TextColumnData) -> None:
        self.data, self.format = data, data.format

    @property
    def table_data(self) -> TextColumnData:
        return self.data

    def prepare(self) -> None:
        self.data.prepare_data()

    def examples(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        self.data.setup()
        dataset = self.data.splits[split]
        return dataset.sequences.long(), dataset.labels
