"""Files a user points at, or that earlier runs left, that cannot be used: one `error:` line, exit 2, nothing changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SMALL_SYNTHETIC, CliRun, run_cli

SMALL = (*SMALL_SYNTHETIC, "debug=fast")


def files_and_times(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def assert_one_error_line(result, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert all(fragment in line for fragment in fragments), line
    assert "Traceback" not in result.stderr
    return line


def _image_folder_with_a_broken_file(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / "images" / label).mkdir(parents=True)
        for index in range(12):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / "images" / label / f"{index}.png")
    broken = root / "images" / "a" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image")
    return root / "images", broken


def _wav_folder_with_a_broken_file(root: Path) -> tuple[Path, Path]:
    (root / "wavs" / "a").mkdir(parents=True)
    broken = root / "wavs" / "a" / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return root / "wavs", broken


def _text_file_not_utf8(root: Path) -> tuple[Path, Path]:
    path = root / "corpus.txt"
    path.write_bytes(bytes(range(256)) * 40)
    return path, path


@pytest.mark.parametrize(
    ("make", "data", "expected"),
    [
        (_image_folder_with_a_broken_file, "folder", "cannot read image {broken}"),
        (_wav_folder_with_a_broken_file, "folder", "cannot read audio {broken}"),
        (_text_file_not_utf8, "text_file", "cannot read {broken} as UTF-8 text"),
    ],
    ids=["image", "wav", "text"],
)
def test_an_unreadable_data_file_exits_2_naming_it(tmp_path: Path, make, data: str, expected: str) -> None:
    path, broken = make(tmp_path)
    content = broken.read_bytes()
    result = run_cli(f"paths.root={tmp_path}", f"data={data}", f"data.path={path}", "debug=fast", "logger=none", cwd=tmp_path)
    assert_one_error_line(result, expected.format(broken=broken))
    assert broken.read_bytes() == content
    assert not (tmp_path / "data" / data).exists()  # nothing half-prepared left behind


def test_damaged_prepared_data_exits_2_saying_how_to_rebuild(vqvae_cli_run: CliRun, tmp_path: Path) -> None:
    shutil.copytree(vqvae_cli_run.root / "data" / "synthetic_image", tmp_path / "data" / "synthetic_image")
    (arrow,) = (tmp_path / "data" / "synthetic_image" / "train").glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[:300])
    before = files_and_times(tmp_path / "data")
    result = run_cli(f"paths.root={tmp_path}", *SMALL, "logger=none", cwd=tmp_path)
    assert_one_error_line(result, f"the prepared data at {tmp_path / 'data' / 'synthetic_image'} cannot be read", "delete that folder and run again")
    assert files_and_times(tmp_path / "data") == before


@pytest.fixture()
def stage_two_inputs(dit_cli_run: CliRun, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A root with the session's prepared data and latent cache; the tokenizer and cache folder they belong to."""
    shutil.copytree(dit_cli_run.root / "data", tmp_path / "data")
    shutil.copytree(dit_cli_run.root / "outputs" / "synthetic_image" / "latents", tmp_path / "outputs" / "synthetic_image" / "latents")
    (cache,) = (tmp_path / "outputs" / "synthetic_image" / "latents").iterdir()
    tokenizer = Path(json.loads((cache / "meta.json").read_text())["tokenizer"])
    return tmp_path, tokenizer, cache


@pytest.mark.parametrize("damage", ["truncated", "other_shape", "other_tokenizer"])
def test_a_latent_cache_that_does_not_match_the_tokenizer_exits_2(stage_two_inputs: tuple[Path, Path, Path], damage: str) -> None:
    root, tokenizer, cache = stage_two_inputs
    latents = cache / "train_latents.npy"
    if damage == "truncated":
        latents.write_bytes(latents.read_bytes()[:200])
        expected = "cannot be read"
    elif damage == "other_shape":
        array = np.load(latents)
        np.save(latents, array[:, :, :, :-1])
        expected = "holds train latents of shape"
    else:
        meta = json.loads((cache / "meta.json").read_text())
        (cache / "meta.json").write_text(json.dumps({**meta, "tokenizer_id": "0123456789abcdef"}))
        expected = "was made by tokenizer 0123456789abcdef"
    before = files_and_times(cache)
    result = run_cli("stage=dit", f"paths.root={root}", *SMALL, f"tokenizer_ckpt={tokenizer}", "logger=none", cwd=root)
    assert_one_error_line(result, f"the latent cache {cache}", expected, "delete that folder and run again to rebuild it")
    assert files_and_times(cache) == before


def test_resuming_a_dit_run_with_another_tokenizer_exits_2(dit_cli_run: CliRun, tmp_path: Path) -> None:
    run_dir = tmp_path / "outputs" / "synthetic_image" / "dit" / dit_cli_run.run_dir.name
    shutil.copytree(dit_cli_run.run_dir, run_dir, symlinks=True)
    trained_on = Path(json.loads((run_dir / "run.json").read_text())["tokenizer"])
    other = tmp_path / "other_tokenizer.pt"
    payload = torch.load(trained_on, weights_only=True)
    payload["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    torch.save(payload, other)
    before = files_and_times(run_dir)
    result = run_cli("stage=dit", f"paths.root={tmp_path}", *SMALL, f"resume={run_dir}", f"tokenizer_ckpt={other}", "logger=none", cwd=tmp_path)
    assert_one_error_line(result, f"tokenizer_ckpt={other} is not the tokenizer {run_dir} trained on ({trained_on})", "drop tokenizer_ckpt= to resume")
    assert files_and_times(run_dir) == before
