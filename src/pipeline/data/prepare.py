"""Building ``data/<name>/`` once: pick a source, split (seeded), fix the size, save as Arrow.

The saved ``DatasetDict`` has ``train``, ``val`` and ``test`` splits with one column of
fixed-size examples (``image`` uint8 C x H x W, ``audio`` float32 1 x T, ``text`` uint8 L) and
an integer ``label`` column, plus ``source.json`` saying which source built it and from which
settings. The data module of each modality says which sources to try and how to fix the size.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.sources import RawData, SourceUnavailable
from pipeline.errors import UserError

log = logging.getLogger("pipeline.data")
SOURCE_FILE = "source.json"


def split_indices(num: int, val_size: int, test_size: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded permutation cut into train / val / test (test may be 0 when the source has its own)."""
    if val_size + test_size >= num:
        raise UserError(f"only {num} examples: val_size={val_size} + test_size={test_size} leave nothing to train on")
    order = np.random.default_rng(seed).permutation(num)
    return {"val": order[:val_size], "test": order[val_size : val_size + test_size], "train": order[val_size + test_size :]}


Examples = Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _take(items: Any, index: np.ndarray) -> Any:
    return items[index] if isinstance(items, np.ndarray) else [items[i] for i in index]


def build_splits(raw: RawData, to_examples: Examples, val_size: int, test_size: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Split the raw items (seeded), then fix each split's size with ``to_examples``.

    Splitting comes first so that a text document never lands in two splits. A source with its own
    test split keeps it (a seeded subset of ``test_size``); the others are cut from ``train``.
    """
    train_items, train_labels = raw.splits["train"]
    has_test = "test" in raw.splits
    cut = split_indices(len(train_labels), val_size, 0 if has_test else test_size, seed)
    splits = {name: to_examples(_take(train_items, idx), np.asarray(train_labels)[idx]) for name, idx in cut.items() if len(idx)}
    if has_test:
        test_items, test_labels = raw.splits["test"]
        keep = np.random.default_rng(seed + 1).permutation(len(test_labels))[: test_size or len(test_labels)]
        splits["test"] = to_examples(_take(test_items, keep), np.asarray(test_labels)[keep])
    return splits


def _feature(example_shape: tuple[int, ...], dtype: np.dtype) -> Any:
    import datasets

    kind = str(np.dtype(dtype))
    if len(example_shape) == 1:
        return datasets.Sequence(datasets.Value(kind), length=example_shape[0])
    array_type = {2: datasets.Array2D, 3: datasets.Array3D, 4: datasets.Array4D}[len(example_shape)]
    return array_type(example_shape, kind)


def save_splits(splits: dict[str, tuple[np.ndarray, np.ndarray]], column: str, target: Path, record: dict[str, Any]) -> None:
    """Write the Arrow DatasetDict (``column`` + ``label``) into a temporary folder and rename it into place."""
    import datasets

    examples = splits["train"][0]
    features = datasets.Features({column: _feature(examples.shape[1:], examples.dtype), "label": datasets.Value("int64")})
    dataset = datasets.DatasetDict(
        {name: datasets.Dataset.from_dict({column: values, "label": labels}, features=features) for name, (values, labels) in splits.items()}
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


def prepare(
    name: str, spec: dict[str, Any], data_dir: Path, how_to_fix: str, sources: list[tuple[str, Callable[[], RawData]]], to_examples: Examples, column: str,
) -> Path:
    """Make sure ``data_dir/name`` holds the prepared splits for ``spec``; returns that folder.

    ``sources`` are tried in order (a :class:`SourceUnavailable` moves on to the next);
    ``to_examples`` fixes the size of a split's raw items; ``column`` names the stored examples.
    """
    target = data_dir / name
    record = prepared_record(target)
    if record is not None and record.get("spec") == spec:
        log.info("data %s: using prepared %s (built from %s)", name, target, record.get("source"))
        return target
    if record is not None:
        log.info("data %s: prepared copy at %s was built with other settings; rebuilding", name, target)
    tried = []
    for kind, load in sources:
        try:
            raw = load()
        except SourceUnavailable as why:
            tried.append(f"{kind}: {why}")
            log.info("data %s: %s source unavailable: %s", name, kind, why)
            continue
        splits = build_splits(raw, to_examples, spec["val_size"], spec["test_size"], spec["seed"])
        sizes = {split: len(labels) for split, (_, labels) in splits.items()}
        data_dir.mkdir(parents=True, exist_ok=True)
        save_splits(splits, column, target, {"spec": spec, "source": raw.description, "kind": kind, "sizes": sizes, "class_names": raw.class_names})
        log.info("data %s: using %s source: %s -> %s %s", name, kind, raw.description, target, sizes)
        return target
    raise UserError(f"no source for data {name!r} worked ({'; '.join(tried) or 'none configured'}); {how_to_fix}")
