"""Stage-two epoch time with the latent cache against encoding every batch on the fly.

Both modes train the same DiT XS/2 (rectified flow, AdamW) for one epoch over the same synthetic
28 x 28 uint8 images, fp32 on CPU, with a tokenizer from ``conf/`` composed with ``data=mnist``
(random weights: timing does not depend on them) and its latent shape: the default
(``vqvae=small``, the headline) and ``vqvae=base``, to show how the gain grows with the encoder. "on_the_fly" loads images through
``ImageTensorDataset`` and encodes each batch with the frozen tokenizer under ``no_grad`` before
the DiT step; "cached" builds the cache once with ``build_latent_cache`` (timed on its own) and then
reads ``LatentDataset`` through a DataLoader. After a warm-up epoch each, the modes alternate
epochs, first one then the other, the order reversed every repeat; the headline is the median.
The same rotation times the tokenizer alone encoding one epoch's batches: the cache can save at most that,
so on the fly / (on the fly - encoding) bounds its speedup.
Memory: each mode runs one more epoch in a fresh single-threaded child process (this module run
with ``python -m``; the two side by side), which reports its resident set size after setup and its peak over
the epoch alone (Linux ``VmHWM``, reset after setup), both including the Python + torch baseline,
and ``ru_maxrss`` for the whole process. ``PIPELINE_BENCH_QUICK=1`` shrinks everything to a smoke test.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import default_config, default_tokenizer, latent_shape, stats
from pipeline.data.image import ImageTensorDataset
from pipeline.diffusion import PRESETS, DiT, LatentDataset, RectifiedFlow, build_latent_cache
from pipeline.diffusion.latents import META_FILE
from pipeline.tokenizer import VQVAE

QUICK = os.environ.get("PIPELINE_BENCH_QUICK") == "1"
TOKENIZERS = {name: default_config("data=mnist", f"vqvae={name}") for name in ("small", "base")}
DEFAULT_TOKENIZER = str(default_config("data=mnist").vqvae.size)
REPO = Path(__file__).resolve().parents[1]
DEPTH, HIDDEN_SIZE, NUM_HEADS = PRESETS["XS"]
MODES = ("on_the_fly", "cached")
ENCODE_ONLY = "encode_only"

CONFIG: dict[str, Any] = {
    "quick": QUICK,
    "threads": 2,
    "dtype": "float32",
    "seed": 0,
    "num_images": 2048,
    "val_images": 256,  # build_latent_cache also encodes a val split; its time is in the build time
    "image_shape": [1, 28, 28],
    "num_classes": 10,
    "batch": 64,
    "dit": {"preset": "XS", "depth": DEPTH, "hidden_size": HIDDEN_SIZE, "num_heads": NUM_HEADS, "patch_size": 2, "num_classes": 10},
    "latent_shapes": {name: list(latent_shape(cfg)) for name, cfg in TOKENIZERS.items()},  # the DiT's in_channels, input_size
    "objective": "RectifiedFlow() (defaults)",
    "adamw": {"lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0.0, "fused": True},  # as conf/stage/dit.yaml
    "tokenizers": {name: f"instantiate(cfg.vqvae) for data=mnist vqvae={name}, seeded random weights, eval, frozen" for name in TOKENIZERS},
    "default_tokenizer": DEFAULT_TOKENIZER,
    "loaders": "DataLoader(batch_size=batch, shuffle=True, drop_last=True, num_workers=0) in both modes",
    "on_the_fly_note": "encoded latents are not normalised per channel (an affine map, negligible time)",
    "warmup_epochs": 1,
    "repeats": 3,
    "target_speedup": 1.5,
    "memory": "one epoch per mode in a fresh single-threaded child process (both at once), from /proc/self/status: "
    "setup_rss = VmRSS after imports, models and data; epoch_peak_rss = VmHWM over the epoch (reset just before it "
    "via /proc/self/clear_refs); process_peak_rss = ru_maxrss (imports included). All include the Python + torch "
    "baseline; tracemalloc is not used (it misses torch's allocations)",
}
if QUICK:  # one thread: on a busy machine two-thread barriers stall every tiny op
    CONFIG.update(threads=1, num_images=128, val_images=32, batch=32, repeats=2)
    CONFIG["dit"].update(depth=1, hidden_size=64, num_heads=2)


def synthetic_images(num: int, seed: int) -> ImageTensorDataset:
    """``num`` uniform-noise uint8 images with random labels."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num, *CONFIG["image_shape"]), dtype=torch.uint8, generator=generator)
    return ImageTensorDataset(images, torch.randint(0, CONFIG["num_classes"], (num,), generator=generator))


def tokenizer(name: str) -> VQVAE:
    """The ``vqvae=name`` tokenizer for MNIST, random weights, frozen."""
    return default_tokenizer(TOKENIZERS[name], CONFIG["seed"])


def build_cache(name: str, target: Path) -> float:
    """Encode the train and val images into ``target``; seconds taken (after one warm-up encode)."""
    model = tokenizer(name)
    splits = {"train": synthetic_images(CONFIG["num_images"], CONFIG["seed"]), "val": synthetic_images(CONFIG["val_images"], CONFIG["seed"] + 1)}
    with torch.no_grad():
        model.encode(splits["val"].images[: CONFIG["batch"]].float())
    start = time.perf_counter()
    build_latent_cache(model, splits, target, hflip=False, meta={"tokenizer": f"random {name}"})
    return time.perf_counter() - start


def latent_dataset(cache_dir: Path) -> LatentDataset:
    """The cached train latents, memory-mapped and normalized with the cache's statistics (as ``LatentDataModule``)."""
    meta = json.loads((cache_dir / META_FILE).read_text())
    latents = np.load(cache_dir / "train_latents.npy", mmap_mode="r")
    return LatentDataset(latents, np.load(cache_dir / "train_labels.npy"), torch.tensor(meta["mean"]), torch.tensor(meta["std"]))


def epoch_loader(dataset: Dataset) -> DataLoader:
    """The seeded, shuffled loader every timed epoch reads (``CONFIG["loaders"]``)."""
    return DataLoader(dataset, batch_size=CONFIG["batch"], shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(CONFIG["seed"]))


def make_epoch(name: str, mode: str, cache_dir: Path) -> Callable[[], float]:
    """A fresh seeded DiT + AdamW and the mode's loader; returns one training epoch, which returns its seconds."""
    torch.manual_seed(CONFIG["seed"])
    channels, size, _ = CONFIG["latent_shapes"][name]
    model = DiT(**CONFIG["dit"], in_channels=channels, input_size=size).train()
    adamw = CONFIG["adamw"]
    optimizer = torch.optim.AdamW(model.parameters(), **{**adamw, "betas": tuple(adamw["betas"])})
    objective = RectifiedFlow()
    encode: Callable[[torch.Tensor], torch.Tensor] | None
    dataset: Dataset
    if mode == "on_the_fly":
        encode, dataset = tokenizer(name).encode, synthetic_images(CONFIG["num_images"], CONFIG["seed"])
    else:
        encode, dataset = None, latent_dataset(cache_dir)
    loader = epoch_loader(dataset)

    def epoch() -> float:
        start = time.perf_counter()
        for x, y in loader:
            if encode is not None:
                with torch.no_grad():
                    x = encode(x)
            optimizer.zero_grad(set_to_none=True)
            objective.loss(model, x, y).backward()
            optimizer.step()
        return time.perf_counter() - start

    return epoch


def make_encode_epoch(name: str) -> Callable[[], float]:
    """One epoch of the on-the-fly loader through the frozen tokenizer only (no DiT); returns its seconds."""
    encode = tokenizer(name).encode
    loader = epoch_loader(synthetic_images(CONFIG["num_images"], CONFIG["seed"]))

    def epoch() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for x, _ in loader:
                encode(x)
        return time.perf_counter() - start

    return epoch


def _status_mib(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident since start or the last reset) from /proc (Linux)."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match is not None, field
    return int(match.group(1)) / 1024


def child_memory(name: str, cache_dir: Path) -> dict[str, dict[str, float]]:
    """One epoch per mode, each in a fresh single-threaded interpreter (this module), side by side; their RSS reports."""
    command = [sys.executable, "-m", "benchmarks.bench_latent_cache", name]
    children = {mode: subprocess.Popen([*command, mode, str(cache_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True) for mode in MODES}
    reports = {mode: child.communicate()[0] for mode, child in children.items()}
    failed = {mode: child.returncode for mode, child in children.items() if child.returncode}
    if failed:
        raise RuntimeError(f"memory child processes failed: {failed}")
    return {mode: json.loads(report.strip().splitlines()[-1]) for mode, report in reports.items()}


def bench_tokenizer(name: str) -> dict[str, Any]:
    """Build the cache in a temporary folder, time both modes' epochs, then their memory."""
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp) / "latents"
        build_s = build_cache(name, cache_dir)
        cache_bytes = {f.name: f.stat().st_size for f in sorted(cache_dir.iterdir())}
        epochs = {mode: make_epoch(name, mode, cache_dir) for mode in MODES}
        epochs[ENCODE_ONLY] = make_encode_epoch(name)
        for epoch in epochs.values():
            for _ in range(CONFIG["warmup_epochs"]):
                epoch()
        samples: dict[str, list[float]] = {mode: [] for mode in epochs}
        order = list(epochs)
        for repeat in range(CONFIG["repeats"]):
            for mode in order if repeat % 2 == 0 else reversed(order):
                samples[mode].append(epochs[mode]())
        memory = child_memory(name, cache_dir)
    timings = {mode: {**stats(values), "samples_s": values} for mode, values in samples.items()}
    on_the_fly, encoding = timings["on_the_fly"]["median_s"], timings[ENCODE_ONLY]["median_s"]
    return {
        "epoch": timings,
        "speedup": on_the_fly / timings["cached"]["median_s"],
        "encoding_share_of_on_the_fly": encoding / on_the_fly,
        "speedup_bound": on_the_fly / (on_the_fly - encoding) if encoding < on_the_fly else None,  # None: timing noise above the DiT's share
        "cache_build_s": build_s,
        "cache_bytes": {**cache_bytes, "total": sum(cache_bytes.values())},
        "memory_mib": memory,
    }


def main(out_dir: Path) -> dict[str, Any]:
    """Every tokenizer in turn; ``out_dir`` is unused (everything goes in the JSON)."""
    torch.set_num_threads(CONFIG["threads"])
    per_tokenizer = {name: bench_tokenizer(name) for name in TOKENIZERS}
    default = per_tokenizer[DEFAULT_TOKENIZER]
    results = {
        "tokenizers": per_tokenizer,
        "steps_per_epoch": CONFIG["num_images"] // CONFIG["batch"],
        "target_met": default["speedup"] >= CONFIG["target_speedup"],
        "load_average_end": list(os.getloadavg()),
    }
    summary: dict[str, Any] = {}
    for name, r in per_tokenizer.items():
        label = f"vqvae={name}" + (" (default)" if name == DEFAULT_TOKENIZER else "")
        memory = r["memory_mib"]
        summary.update({
            f"{label}: on the fly epoch (s)": r["epoch"]["on_the_fly"]["median_s"],
            f"{label}: cached epoch (s)": r["epoch"]["cached"]["median_s"],
            f"{label}: speedup (on the fly / cached)": r["speedup"],
            f"{label}: tokenizer alone encoding the epoch (s)": r["epoch"][ENCODE_ONLY]["median_s"],
            f"{label}: speedup bound, on the fly / (on the fly - encoding)": r["speedup_bound"],
            f"{label}: cache build, one-off (s)": r["cache_build_s"],
            f"{label}: cache size on disk (bytes)": r["cache_bytes"]["total"],
            f"{label}: on the fly epoch peak RSS (MiB)": memory["on_the_fly"]["epoch_peak_rss"],
            f"{label}: cached epoch peak RSS (MiB)": memory["cached"]["epoch_peak_rss"],
        })
    summary[f"default tokenizer: target >= {CONFIG['target_speedup']:g}x met"] = results["target_met"]
    return {"config": CONFIG, "results": results, "summary": summary}


if __name__ == "__main__":  # child_memory: python -m benchmarks.bench_latent_cache TOKENIZER MODE CACHE_DIR -> one JSON line (MiB)
    torch.set_num_threads(1)  # two children share the machine; threads do not change the memory that matters
    run_epoch = make_epoch(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
    setup = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0), so the epoch's peak is not the imports'
    run_epoch()
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"setup_rss": setup, "epoch_peak_rss": _status_mib("VmHWM"), "process_peak_rss": process_peak}))
