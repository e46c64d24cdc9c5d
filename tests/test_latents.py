"""The latent cache: built once per tokenizer, flips as a second view, normalized batches, and a stale cache never used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.image import ImageTensorDataset
from pipeline.diffusion import LatentDataModule, file_digest
from pipeline.diffusion.generate import code_projection, decode_latents
from pipeline.tokenizer import VQVAE, ImageDecoder, ImageEncoder, ImageReconstruction, VectorQuantizer, load_tokenizer, save_tokenizer


class FakeImages:
    """Stands in for the image DataModule: fixed uint8 splits and a source record."""

    def __init__(self, seed: int = 0, record: dict | None = None) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.name = "toy"
        self.source_record = record or {"source": "toy", "seed": seed}
        self.splits = {
            split: ImageTensorDataset(torch.randint(0, 256, (n, 1, 16, 16), generator=generator, dtype=torch.uint8), torch.arange(n) % 3)
            for split, n in (("train", 12), ("val", 5), ("test", 5))
        }
        self.prepared = 0

    def prepare_data(self) -> None:
        self.prepared += 1

    def setup(self, stage: str | None = None) -> None:
        pass


def write_tokenizer(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = VQVAE(ImageEncoder(1, [8, 16], 1, 4), ImageDecoder(1, [8, 16], 1, 4), VectorQuantizer(4, 16, kmeans_init=False), ImageReconstruction(), size="tiny")
    return save_tokenizer(model, path, {"latent_shape": [4, 8, 8]})


def cache_for(tokenizer: Path, root: Path, images: FakeImages | None = None, hflip: bool = False) -> LatentDataModule:
    latents = LatentDataModule(images or FakeImages(), tokenizer, root / "latents", batch_size=4, hflip=hflip)
    latents.prepare_data()
    latents.setup()
    return latents


def test_cache_layout_stats_and_normalized_batches(tmp_path: Path) -> None:
    tokenizer = write_tokenizer(tmp_path / "a.pt", seed=0)
    latents = cache_for(tokenizer, tmp_path)
    assert latents.cache_dir == tmp_path / "latents" / file_digest(tokenizer)
    train = np.load(latents.cache_dir / "train_latents.npy", mmap_mode="r")
    assert isinstance(train, np.memmap) and train.shape == (12, 1, 4, 8, 8)
    assert np.array_equal(np.load(latents.cache_dir / "train_labels.npy"), np.arange(12) % 3)
    mean, std = latents.stats
    assert torch.allclose(mean, torch.from_numpy(train.mean(axis=(0, 1, 3, 4))).float(), atol=1e-5)
    assert torch.allclose(std, torch.from_numpy(train.std(axis=(0, 1, 3, 4))).float(), atol=1e-4)
    x, y = next(iter(torch.utils.data.DataLoader(latents.splits["train"], batch_size=12)))
    assert x.shape == (12, 4, 8, 8) and torch.equal(y, torch.arange(12) % 3)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-4)
    assert not list((tmp_path / "latents").glob(".*"))  # no temporary build folder left


def test_cache_matches_the_frozen_encoder(tmp_path: Path) -> None:
    tokenizer_path = write_tokenizer(tmp_path / "a.pt", seed=0)
    images = FakeImages()
    latents = cache_for(tokenizer_path, tmp_path, images)
    from pipeline.tokenizer import load_tokenizer

    with torch.no_grad():
        expected = load_tokenizer(tokenizer_path).encode(images.splits["val"].images.float() / 127.5 - 1)
    cached = torch.from_numpy(np.load(latents.cache_dir / "val_latents.npy"))[:, 0]
    assert torch.allclose(cached, expected, atol=1e-5)


def test_flips_are_a_second_view_sampled_at_random(tmp_path: Path) -> None:
    tokenizer_path = write_tokenizer(tmp_path / "a.pt", seed=0)
    images = FakeImages()
    latents = cache_for(tokenizer_path, tmp_path, images, hflip=True)
    train = np.load(latents.cache_dir / "train_latents.npy")
    assert train.shape == (12, 2, 4, 8, 8) and np.load(latents.cache_dir / "val_latents.npy").shape[1] == 1
    from pipeline.tokenizer import load_tokenizer

    with torch.no_grad():
        flipped = load_tokenizer(tokenizer_path).encode(images.splits["train"].images.flip(-1).float() / 127.5 - 1)
    assert torch.allclose(torch.from_numpy(train[:, 1]), flipped, atol=1e-5)
    torch.manual_seed(0)
    mean, std = latents.stats
    views = torch.from_numpy(train[0]).sub(mean.view(1, -1, 1, 1)).div(std.view(1, -1, 1, 1))
    seen = {int(torch.argmin(torch.stack([(latents.splits["train"][0][0] - v).abs().sum() for v in views]))) for _ in range(40)}
    assert seen == {0, 1}


def test_same_tokenizer_reuses_the_cache_and_a_new_one_gets_its_own(tmp_path: Path) -> None:
    first = write_tokenizer(tmp_path / "a.pt", seed=0)
    built = cache_for(first, tmp_path)
    stamp = (built.cache_dir / "meta.json").stat().st_mtime_ns
    again = cache_for(first, tmp_path)
    assert again.cache_dir == built.cache_dir and (built.cache_dir / "meta.json").stat().st_mtime_ns == stamp
    retrained = write_tokenizer(tmp_path / "a.pt", seed=1)  # the same path, new weights
    fresh = cache_for(retrained, tmp_path)
    assert fresh.cache_dir != built.cache_dir
    assert not np.allclose(np.load(fresh.cache_dir / "train_latents.npy"), np.load(built.cache_dir / "train_latents.npy"))


@pytest.mark.parametrize("change", ["data", "hflip", "unfinished"])
def test_a_stale_cache_is_rebuilt(tmp_path: Path, change: str) -> None:
    tokenizer = write_tokenizer(tmp_path / "a.pt", seed=0)
    built = cache_for(tokenizer, tmp_path)
    before = np.load(built.cache_dir / "train_latents.npy")
    if change == "unfinished":
        (built.cache_dir / "meta.json").unlink()
        rebuilt = cache_for(tokenizer, tmp_path)
    elif change == "hflip":
        rebuilt = cache_for(tokenizer, tmp_path, hflip=True)
    else:
        rebuilt = cache_for(tokenizer, tmp_path, FakeImages(seed=1))
    meta = json.loads((rebuilt.cache_dir / "meta.json").read_text())
    after = np.load(rebuilt.cache_dir / "train_latents.npy")
    assert meta["hflip"] == (change == "hflip")
    if change == "unfinished":
        assert np.array_equal(before, after)  # the same inputs encode to the same latents
    else:
        assert not np.array_equal(before, after)


def test_code_projection_maps_normalized_latents_onto_normalized_codes(tmp_path: Path) -> None:
    """What ``sample.snap_to_codes`` uses: idempotent, decodes like the unprojected latents, and lands on the codebook."""
    tokenizer = load_tokenizer(write_tokenizer(tmp_path / "tokenizer.pt", seed=0)).eval()
    mean, std = torch.randn(4), torch.rand(4) + 0.5
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    project = code_projection(tokenizer, mean, std)
    with torch.no_grad():
        projected = project(latents)
        assert torch.allclose(project(projected), projected, atol=1e-5)
        assert torch.allclose(decode_latents(tokenizer, projected, mean, std), decode_latents(tokenizer, latents, mean, std), atol=1e-5)
    codes = tokenizer.quantizer.codes_to_vectors(torch.arange(16).view(1, 16))[0]  # (16, 4) in tokenizer space
    vectors = (projected * std.view(1, 4, 1, 1) + mean.view(1, 4, 1, 1)).permute(0, 2, 3, 1).reshape(-1, 4)
    assert (vectors[:, None] - codes[None]).norm(dim=-1).min(dim=1).values.max() < 1e-5
