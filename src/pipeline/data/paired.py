"""Paired data for cross-modal stage two: images, and prompts in another modality that ask for them.

Offline, pairs are made by shared label: every image of a digit goes with a prompt for that digit,
drawn anew each time it is served: a spoken clip of the digit (:class:`AudioPrompts`, from the
spoken-digits data set) or a sentence from a template (:class:`TextPrompts`, "a handwritten
seven"). The prompts of the val and test splits are held out: clips of the audio set's own
held-out splits, and templates never used in training. A table with one column per modality
pairs them row by row instead (:mod:`pipeline.data.paired_table`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.data.audio import PEAK, AudioDataModule, decode_audio, fix_length
from pipeline.data.datamodule import DataModule
from pipeline.data.image import ImageDataModule
from pipeline.data.text import PAD
from pipeline.detect import prompt_kind_error
from pipeline.errors import UserError

SPLIT_KEYS = ("hub_id", "path", "label_column", "val_size", "test_size", "seed")  # two columns with these alike split into the same rows
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class PromptSource(ABC):
    """Prompts of one modality with the digit each asks for, per split, as the source tokenizer takes them."""

    modality: str

    @property
    @abstractmethod
    def example_shape(self) -> list[int]:
        """The shape of one prompt as the source tokenizer takes it (what its ``example_shape`` must be)."""

    def prepare(self) -> None:
        """Make the prompts available on disk (rank 0); nothing to do by default."""

    @property
    def table_data(self) -> DataModule | None:
        """The data module whose rows are the prompts when prompt ``i`` of a split belongs to image ``i`` of that split
        (a column of the images' table); None when a prompt goes with any image of its label."""
        return None

    def prompt_latents(self, latent_length: int) -> int:
        """How many of the source tokenizer's ``latent_length`` latents a prompt can fill: all of them by default."""
        return latent_length

    @abstractmethod
    def examples(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompts of ``split`` (train, val or test) as tokenizer inputs ``(P, ...)``, and their digits ``(P,)``."""

    @abstractmethod
    def load(self, prompt: str) -> torch.Tensor:
        """One prompt a user gives (``sample.prompt``) as a tokenizer input ``(1, ...)``, or one line saying why not."""


@dataclass(frozen=True)
class WrittenPromptFormat:
    """Written prompts as the text tokenizer takes them: UTF-8 bytes padded with 0 to ``seq_length`` (its example
    length). Prompts are short: 1 to ``max_bytes`` bytes, and the DiT reads only the latents those bytes fill."""

    seq_length: int
    max_bytes: int

    def __post_init__(self) -> None:
        if not 0 < self.max_bytes <= self.seq_length:
            raise UserError(f"text prompts need 0 < max_bytes <= seq_length ({self.seq_length}); got max_bytes={self.max_bytes}")

    def latents(self, latent_length: int) -> int:
        """How many of a text tokenizer's ``latent_length`` latents (of ``seq_length`` bytes) the first ``max_bytes`` bytes fill."""
        return -(-self.max_bytes * latent_length // self.seq_length)

    def encode(self, text: str) -> torch.Tensor:
        """``text`` as int64 ``(seq_length,)``, or one line saying why it cannot be a prompt."""
        data = text.encode("utf-8")
        if not data or len(data) > self.max_bytes:
            raise UserError(f"a text prompt must be 1 to {self.max_bytes} bytes of UTF-8 (max_bytes of the text prompts); got {len(data)}: {text[:40]!r}")
        out = torch.full((self.seq_length,), PAD, dtype=torch.long)
        out[: len(data)] = torch.tensor(list(data))
        return out

    def load(self, prompt: str) -> torch.Tensor:
        """A written prompt a user gives (``sample.prompt``) as a tokenizer input ``(1, seq_length)``."""
        if error := prompt_kind_error(prompt, "text"):
            raise UserError(error)
        return self.encode(prompt)[None]


class WrittenPrompts(PromptSource):
    """A source of written prompts in one :class:`WrittenPromptFormat` (``self.format``)."""

    modality = "text"
    format: WrittenPromptFormat

    @property
    def example_shape(self) -> list[int]:
        return [self.format.seq_length]

    def prompt_latents(self, latent_length: int) -> int:
        return self.format.latents(latent_length)

    def load(self, prompt: str) -> torch.Tensor:
        return self.format.load(prompt)


class TextPrompts(WrittenPrompts):
    """Sentences from templates with ``{word}`` ("seven") or ``{digit}`` ("7") in them.

    The text tokenizer turns a few bytes into one latent, so the latents of a word depend on where it
    starts within such a group: the training prompts are also given with ``1 .. shifts - 1`` leading
    spaces, which puts every word at every alignment (without it, held-out templates were read as noise).

    Args:
        templates: the training templates.
        heldout_templates: the templates of the val and test prompts, never seen in training.
        seq_length, max_bytes: the :class:`WrittenPromptFormat`.
        shifts: leading-space variants of each training prompt (1: none).
    """

    def __init__(self, templates: list[str], heldout_templates: list[str], seq_length: int = 128, max_bytes: int = 32, shifts: int = 4) -> None:
        if not templates or not heldout_templates:
            raise UserError("text prompts need at least one training and one held-out template")
        overlap = sorted(set(templates) & set(heldout_templates))
        if overlap:
            raise UserError(f"held-out templates must not be training templates: {overlap}")
        if shifts < 1:
            raise UserError(f"text prompts need shifts >= 1; got {shifts}")
        self.format = WrittenPromptFormat(seq_length, max_bytes)
        self.templates, self.heldout_templates, self.shifts = list(templates), list(heldout_templates), shifts
        too_long = [text for text in self.fill([" " * (shifts - 1) + t for t in self.templates])[0] + self.fill(self.heldout_templates)[0] if len(text.encode()) > max_bytes]
        if too_long:
            raise UserError(f"text prompt templates must fit in max_bytes={max_bytes} (with {shifts - 1} leading spaces in training): {too_long[0]!r} does not")

    @staticmethod
    def fill(templates: list[str]) -> tuple[list[str], list[int]]:
        """Every template for every digit: the sentences and their digits."""
        pairs = [(template.format(word=word, digit=digit), digit) for template in templates for digit, word in enumerate(DIGIT_WORDS)]
        return [text for text, _ in pairs], [digit for _, digit in pairs]

    def examples(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "train":
            texts, digits = self.fill([" " * shift + template for shift in range(self.shifts) for template in self.templates])
        else:
            texts, digits = self.fill(self.heldout_templates)
        return torch.stack([self.format.encode(text) for text in texts]), torch.tensor(digits)


class AudioPrompts(PromptSource):
    """Spoken prompts: the clips of an audio data module (its train split for training, its val and test splits held out).

    Args:
        data: the :class:`~pipeline.data.AudioDataModule` of the clips (labels are the digits).
        by_row: clip i of a split is the prompt of image i of that split (the clips are a column of the images' table),
            instead of any clip of the image's label.
    """

    modality = "audio"

    def __init__(self, data: AudioDataModule, by_row: bool = False) -> None:
        self.data, self.by_row = data, by_row

    @property
    def table_data(self) -> AudioDataModule | None:
        return self.data if self.by_row else None

    @property
    def example_shape(self) -> list[int]:
        return [1, self.data.spec["clip_length"]]

    def prepare(self) -> None:
        self.data.prepare_data()

    def examples(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        self.data.setup()
        dataset = self.data.splits[split]
        return dataset.clips, dataset.labels

    def load(self, prompt: str) -> torch.Tensor:
        if error := prompt_kind_error(prompt, self.modality):
            raise UserError(error)
        path, spec = Path(prompt).expanduser(), self.data.spec
        clip = fix_length(decode_audio(path, spec["sample_rate"]), spec["clip_length"])
        if spec["peak_normalize"]:
            peak = float(np.abs(clip).max())
            if peak < 1e-4:
                raise UserError(f"sample.prompt={prompt} is silent")
            clip *= PEAK / peak
        return torch.from_numpy(np.clip(clip, -1.0, 1.0))[None, None]


def split_mismatch(image: DataModule, column: DataModule) -> str | None:
    """Why the rows of ``column`` would not be the rows of ``image``, split for split, or None."""
    differ = [key for key in SPLIT_KEYS if image.spec.get(key) != column.spec.get(key)]
    return ", ".join(f"{key} {image.spec.get(key)!r} (images) != {column.spec.get(key)!r} ({column.name})" for key in differ) or None


class PairedData:
    """Images paired with prompts of the modality ``condition`` names: by label, or row by row from one table.

    Args:
        name: the name runs are filed under (``outputs/<name>/``).
        image: the image data module (its tokenizer, latent cache and reference classifier are those of its own name).
        prompts: prompt sources by modality (``text``, ``audio``).
        condition: which source conditions the DiT (``text`` or ``audio``; ``class`` and ``none`` use the image labels or nothing).
        modality: always ``image`` (what is generated); num_classes: digits.
        batch_size, num_workers, shuffle: stage two's loader settings (``batch_size`` is the global batch).
        size, channels, hflip: the image data's, repeated for ``modality=image`` (which reads them from the data config).
        table: the table (hub id or local dataset) that images and prompts are columns of (:mod:`pipeline.data.paired_table`);
            None: prompts paired by label.
    """

    def __init__(
        self, name: str, image: ImageDataModule, prompts: dict[str, PromptSource], condition: str, modality: str = "image", num_classes: int = 10,
        batch_size: int = 64, num_workers: int = 0, shuffle: bool = True, size: int = 28, channels: int = 1, hflip: bool = False,
        table: str | None = None,
    ) -> None:
        if (size, channels) != (image.spec["size"], image.spec["channels"]) or hflip != image.hflip:
            raise UserError(f"data={name}: size, channels and hflip must be those of its image data ({image.name})")
        if table is not None and image.spec["hub_id"] != table:
            raise UserError(f"data={name} pairs the columns of data.table={table}, but its images come from {image.spec['hub_id']}: leave data.image.hub_id at ${{..table}}")
        for kind, source in prompts.items():
            if source.table_data is not None and (why := split_mismatch(image, source.table_data)):
                raise UserError(f"data={name}: the {kind} prompts must be a column of the images' table, split alike, to pair row by row; {why}")
        self.name, self.image, self.prompts, self.condition, self.modality = name, image, dict(prompts), condition, modality
        self.num_classes, self.batch_size, self.num_workers, self.shuffle, self.table = num_classes, batch_size, num_workers, shuffle, table

    @property
    def prompt_source(self) -> PromptSource:
        if self.condition not in self.prompts:
            raise UserError(f"data={self.name} has no {self.condition} prompts; valid: condition={' | '.join(sorted(self.prompts))} (or class, none)")
        return self.prompts[self.condition]
