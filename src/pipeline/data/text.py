"""Text: the data module, its dataset and its sources (hub, Debian fortunes, any UTF-8 file, synthetic sentences).

A document is a unit that should not be cut if it can be helped: a fortune, a story, a paragraph
of a text file. :func:`pack_documents` fills each ``length``-byte sequence with whole documents
(joined by a newline) and cuts only a document longer than a sequence, at the last whitespace
that fits; the rest of a sequence is padding (byte 0), which :func:`decode_bytes` drops.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.datamodule import DataModule
from pipeline.data.sources import RawData, SourceUnavailable, load_hub_splits
from pipeline.errors import UserError, one_line

PAD = 0
FORTUNES_DIR = Path("/usr/share/games/fortunes")
SEPARATOR = b"\n"


def read_fortune_file(path: Path) -> list[str]:
    """The fortunes of one strfile source: entries separated by lines holding only ``%``."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [entry.strip("\n") for entry in re.split(r"^%$", text, flags=re.MULTILINE) if entry.strip()]


def read_fortunes(directory: Path | None = None) -> RawData:
    """Every fortune of the Debian ``fortunes`` package (the source files, not the ``.dat`` indexes)."""
    directory = directory or FORTUNES_DIR
    files = sorted(p for p in directory.glob("*") if p.is_file() and not p.suffix and not p.name.startswith(".")) if directory.is_dir() else []
    documents = [doc for file in files for doc in read_fortune_file(file)]
    if not documents:
        raise SourceUnavailable(f"no fortune files in {directory} (install them with: make data-fortunes)")
    return _unlabelled({"train": documents}, f"fortunes from the Debian package ({len(files)} files in {directory})")


def read_text_file(path: str | Path) -> RawData:
    """Any UTF-8 text file, one document per paragraph (blank-line separated)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data.path {path} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path} as UTF-8 text: {one_line(err)}") from err
    documents = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if not documents:
        raise UserError(f"{path} holds no text")
    return _unlabelled({"train": documents}, f"text file {path}")


def load_hub_text(hub_id: str, text_column: str, cache_dir: Path, timeout: float) -> RawData:
    """Documents per split of a hub dataset (empty ones dropped)."""
    splits = load_hub_splits(hub_id, {text_column: "text_column"}, cache_dir, timeout)
    return _unlabelled({name: [doc for doc in split[text_column] if doc and doc.strip()] for name, split in splits.items()}, f"Hugging Face dataset {hub_id}")


def _unlabelled(splits: dict[str, list[str]], description: str) -> RawData:
    """Documents carry no class: every label is 0."""
    return RawData({name: (docs, np.zeros(len(docs), dtype=np.int64)) for name, docs in splits.items()}, description)


SUBJECTS = ("the cat", "a dog", "my friend", "the old man", "a small bird", "the teacher", "our neighbour", "the child")
VERBS = ("sat on", "looked at", "walked to", "talked about", "found", "painted", "forgot", "waited for")
OBJECTS = ("the mat", "a red box", "the river", "an open window", "the garden", "a long letter", "the market", "a quiet song")
ENDINGS = (".", " today.", " again.", " in the morning.", " before dinner.", " with a smile.")


def make_synthetic_text(num_documents: int, seed: int) -> RawData:
    """Documents of one to four sentences from a tiny grammar: English-like bytes for tests and smoke runs."""
    rng = np.random.default_rng(seed)
    documents = []
    for _ in range(num_documents):
        sentences = []
        for _ in range(int(rng.integers(1, 5))):
            words = (SUBJECTS[rng.integers(len(SUBJECTS))], VERBS[rng.integers(len(VERBS))], OBJECTS[rng.integers(len(OBJECTS))])
            sentence = " ".join(words) + ENDINGS[rng.integers(len(ENDINGS))]
            sentences.append(sentence[0].upper() + sentence[1:])
        documents.append(" ".join(sentences))
    return _unlabelled({"train": documents}, f"synthetic sentences ({num_documents} documents, generated)")


def _pieces(document: bytes, length: int) -> list[bytes]:
    """A document cut into pieces of at most ``length`` bytes, at the last whitespace that fits when there is one."""
    pieces = []
    while len(document) > length:
        cut = max(document.rfind(b" ", 0, length + 1), document.rfind(b"\n", 0, length + 1))
        cut = cut if cut > 0 else length
        pieces.append(document[:cut])
        document = document[cut:].lstrip(b" \n")
    return [*pieces, document] if document else pieces


def pack_documents(documents: list[str], length: int) -> np.ndarray:
    """Documents -> ``(N, length)`` uint8 byte sequences, whole documents packed greedily, padded with 0."""
    sequences, current = [], b""
    for document in documents:
        for piece in _pieces(document.replace("\0", "").encode("utf-8"), length):
            joined = current + SEPARATOR + piece if current else piece
            if len(joined) <= length:
                current = joined
                continue
            sequences.append(current)
            current = piece
    if current:
        sequences.append(current)
    out = np.full((len(sequences), length), PAD, dtype=np.uint8)
    for row, sequence in zip(out, sequences):
        row[: len(sequence)] = np.frombuffer(sequence, dtype=np.uint8)
    return out


def decode_bytes(sequence: np.ndarray) -> str:
    """A byte sequence back to text: padding dropped, invalid UTF-8 replaced."""
    return bytes(int(b) for b in sequence if b != PAD).decode("utf-8", errors="replace")


class ByteSequenceDataset(Dataset):
    """uint8 byte sequences ``(N, L)`` held in memory, served as int64 byte ids with their labels."""

    def __init__(self, sequences: torch.Tensor, labels: torch.Tensor) -> None:
        self.sequences, self.labels = sequences, labels

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, index: int | slice) -> torch.Tensor:
        """Examples as the tokenizer takes them: int64 byte ids ``(L,)``."""
        return self.sequences[index].long()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs(index), self.labels[index]


class TextDataModule(DataModule):
    """Byte sequences ``(B, L)`` (int64 in [0, 255], 0 is padding); labels are 0 (text is unconditional).

    Args (besides :class:`DataModule`'s; ``val_size`` and ``test_size`` count documents):
        text_column: the hub dataset's text column.
        seq_length: bytes per sequence; documents are packed whole and cut at whitespace only when longer.
        synthetic_documents: documents of the synthetic source.
    """

    column = "text"

    def __init__(
        self,
        name: str,
        modality: str = "text",
        hub_id: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        offline: str | None = None,
        path: str | None = None,
        seq_length: int = 128,
        num_classes: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        val_size: int = 200,
        test_size: int = 200,
        synthetic_documents: int = 1000,
        hub_timeout: float = 5.0,
        seed: int = 0,
        data_dir: str = "data",
        how_to_fix: str = "point data.path at a UTF-8 text file",
        shuffle: bool = True,
    ) -> None:
        super().__init__(
            name, modality, hub_id, label_column, offline, path, num_classes, batch_size, num_workers, val_size, test_size,
            hub_timeout, seed, data_dir, how_to_fix,
            spec=dict(text_column=text_column, seq_length=seq_length, synthetic_documents=synthetic_documents),
            shuffle=shuffle,
        )

    def sources(self) -> list[tuple[str, Callable[[], RawData]]]:
        spec = self.spec
        if spec["path"]:
            return [("local", lambda: read_text_file(spec["path"]))]
        candidates: list[tuple[str, Callable[[], RawData]]] = []
        if spec["hub_id"]:
            candidates.append(("hub", lambda: load_hub_text(spec["hub_id"], spec["text_column"], self.data_dir / ".hf_cache", spec["hub_timeout"])))
        offline = spec["offline"]
        if offline == "synthetic":
            candidates.append(("generated", lambda: make_synthetic_text(spec["synthetic_documents"], spec["seed"])))
        elif offline == "debian_fortunes":
            candidates.append(("offline", read_fortunes))
        elif offline:
            raise UserError(f"unknown data.offline source {offline!r} for text; valid: synthetic, debian_fortunes")
        return candidates

    def to_examples(self, items: Any, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sequences = pack_documents(list(items), self.spec["seq_length"])
        return sequences, np.zeros(len(sequences), dtype=np.int64)

    def dataset(self, examples: torch.Tensor, labels: torch.Tensor, split: str) -> ByteSequenceDataset:
        return ByteSequenceDataset(examples, labels)
