"""Files a user points at, or that earlier runs left, that cannot be used: one `error:` line, exit 2, nothing changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SMALL_SYNTHETIC, CliRun, assert_one_error_line, files_and_times, run_cli

SMALL = (*SMALL_SYNTHETIC, "debug=fast")


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
        pytest.param(_wav_folder_with_a_broken_file, "folder", "cannot read audio {broken}", marks=pytest.mark.slow),  # unit-tested in test_data_audio_text
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
