"""Building ``data/<name>/`` once: pick a source, resize, split (seeded), save as Arrow.

The saved ``DatasetDict`` has ``train``, ``val`` and ``test`` splits with an ``image``
column (uint8, C x H x W at the training size) and an integer ``label`` column, plus
``source.json`` saying which source built it and from which settings.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.sources import OFFLINE_SOURCES, RawImages, SourceUnavailable, load_hub, load_local
from pipeline.data.synthetic import make_synthetic_images
from pipeline.errors import UserError

log = logging.getLogger("pipeline.data")
SOURCE_FILE = "source.json"


def to_chw(images: Any, size: int, channels: int) -> np.ndarray:
    """Images (array ``(N, H, W[, C])`` or list of PIL images) -> ``(N, channels, size, size)`` uint8."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(images), channels, size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        if img.mode != mode:
            img = img.convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(img, dtype=np.uint8)
        out[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return out


def split_indices(num: int, val_size: int, test_size: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded permutation cut into train / val / test (test may be 0 when the source has its own)."""
    if val_size + test_size >= num:
        raise UserError(f"only {num} examples: val_size={val_size} + test_size={test_size} leave nothing to train on")
    order = np.random.default_rng(seed).permutation(num)
    return {"val": order[:val_size], "test": order[val_size : val_size + test_size], "train": order[val_size + test_size :]}


def build_splits(raw: RawImages, size: int, channels: int, val_size: int, test_size: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    train_images, train_labels = raw.splits["train"]
    has_test = "test" in raw.splits
    cut = split_indices(len(train_labels), val_size, 0 if has_test else test_size, seed)
    train_chw = to_chw(train_images, size, channels)
    splits = {name: (train_chw[idx], np.asarray(train_labels)[idx]) for name, idx in cut.items() if len(idx)}
    if has_test:
        test_images, test_labels = raw.splits["test"]
        keep = np.random.default_rng(seed + 1).permutation(len(test_labels))[: test_size or len(test_labels)]
        splits["test"] = (to_chw([test_images[i] for i in keep], size, channels), np.asarray(test_labels)[keep])
    return splits


def save_splits(splits: dict[str, tuple[np.ndarray, np.ndarray]], target: Path, record: dict[str, Any]) -> None:
    """Write the Arrow DatasetDict into a temporary folder and rename it into place."""
    import datasets

    channels, size = splits["train"][0].shape[1:3]
    features = datasets.Features({"image": datasets.Array3D((channels, size, size), "uint8"), "label": datasets.Value("int64")})
    dataset = datasets.DatasetDict(
        {name: datasets.Dataset.from_dict({"image": images, "label": labels}, features=features) for name, (images, labels) in splits.items()}
    )
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def prepared_record(target: Path) -> dict[str, Any] | None:
    try:
        return json.loads((target / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def candidate_sources(spec: dict[str, Any], data_dir: Path) -> list[tuple[str, Callable[[], RawImages]]]:
    """The sources to try, in order: local files if ``path`` is set, else hub, then the offline source."""
    size = spec["size"]
    if spec.get("path"):
        return [("local", lambda: load_local(spec["path"], size, spec.get("csv_label", "last")))]
    candidates: list[tuple[str, Callable[[], RawImages]]] = []
    if spec.get("hub_id"):
        candidates.append(("hub", lambda: load_hub(spec["hub_id"], spec["image_column"], spec["label_column"], data_dir / ".hf_cache", spec["hub_timeout"])))
    offline = spec.get("offline")
    if offline == "synthetic":
        candidates.append(("generated", lambda: make_synthetic_images(size, spec["channels"], spec["synthetic_per_class"], spec["seed"])))
    elif offline:
        if offline not in OFFLINE_SOURCES:
            raise UserError(f"unknown data.offline source {offline!r}; valid: synthetic, {', '.join(OFFLINE_SOURCES)}")
        candidates.append(("offline", lambda: OFFLINE_SOURCES[offline](size)))
    return candidates


def prepare(name: str, spec: dict[str, Any], data_dir: Path, how_to_fix: str) -> Path:
    """Make sure ``data_dir/name`` holds the prepared splits for ``spec``; returns that folder."""
    target = data_dir / name
    record = prepared_record(target)
    if record is not None and record.get("spec") == spec:
        log.info("data %s: using prepared %s (built from %s)", name, target, record.get("source"))
        return target
    if record is not None:
        log.info("data %s: prepared copy at %s was built with other settings; rebuilding", name, target)
    tried = []
    for kind, load in candidate_sources(spec, data_dir):
        try:
            raw = load()
        except SourceUnavailable as why:
            tried.append(f"{kind}: {why}")
            log.info("data %s: %s source unavailable: %s", name, kind, why)
            continue
        splits = build_splits(raw, spec["size"], spec["channels"], spec["val_size"], spec["test_size"], spec["seed"])
        sizes = {split: len(labels) for split, (_, labels) in splits.items()}
        data_dir.mkdir(parents=True, exist_ok=True)
        save_splits(splits, target, {"spec": spec, "source": raw.description, "kind": kind, "sizes": sizes, "class_names": raw.class_names})
        log.info("data %s: using %s source: %s -> %s %s", name, kind, raw.description, target, sizes)
        return target
    raise UserError(f"no source for data {name!r} worked ({'; '.join(tried) or 'none configured'}); {how_to_fix}")
