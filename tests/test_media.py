"""The media writers: what each modality puts on disk (and in samples.npz) for rows of examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import torch
from PIL import Image

from pipeline.data.text import pack_documents
from pipeline.media import AudioMedia, ImageMedia, TextMedia
from pipeline.stages.sample import class_rows


def test_image_rows_become_one_png_grid_even_when_a_row_is_short(tmp_path: Path) -> None:
    media = ImageMedia()
    rows = [torch.rand(3, 1, 8, 8) * 2 - 1, torch.rand(1, 1, 8, 8) * 2 - 1, torch.empty(0, 1, 8, 8)]
    (path,) = media.save_rows(rows, ["a", "b", "c"], tmp_path / "grid")
    assert path == tmp_path / "grid.png" and Image.open(path).size == (3 * 10 + 2, 3 * 10 + 2)
    assert media.arrays(rows[0])["images"].dtype == np.uint8


def test_audio_rows_become_wavs_and_a_spectrogram_grid(tmp_path: Path) -> None:
    media = AudioMedia(sample_rate=8000)
    t = torch.arange(1024) / 8000
    tone = (0.5 * torch.sin(2 * torch.pi * 440 * t)).view(1, 1, -1)
    rows = [tone.repeat(2, 1, 1), torch.empty(0, 1, 1024), tone]  # a class nobody drew stays an empty row
    grid, *wavs = media.save_rows(rows, ["class 0", "class 1", "class 2"], tmp_path / "samples")
    assert grid == tmp_path / "samples.png" and Image.open(grid).size[1] == 3 * (64 + 2) + 2  # 64 mel bands per row
    assert [w.name for w in wavs] == ["class_0_000.wav", "class_0_001.wav", "class_2_000.wav"]
    clip, rate = soundfile.read(wavs[0], dtype="float32")
    assert rate == 8000 and np.abs(clip - tone.flatten().numpy()).max() < 1e-4
    arrays = media.arrays(tone.repeat(3, 1, 1))
    assert arrays["audio"].shape == (3, 1024) and arrays["audio"].dtype == np.float32 and int(arrays["sample_rate"]) == 8000


def test_text_rows_become_one_utf8_file_and_logits_become_bytes(tmp_path: Path) -> None:
    media = TextMedia()
    sequences = torch.from_numpy(pack_documents(["Hello there.", "Caf\u00e9 au lait."], 16).astype(np.int64))
    logits = torch.nn.functional.one_hot(sequences, 256).permute(0, 2, 1).float()  # (B, 256, L)
    assert torch.equal(media.to_data(logits), sequences) and torch.equal(media.to_data(sequences), sequences)
    (path,) = media.save_rows([sequences, sequences[:1]], ["original", "reconstruction"], tmp_path / "recon")
    text = path.read_text(encoding="utf-8")
    assert path.suffix == ".txt" and text.startswith("## original\n\nHello there.") and "Caf\u00e9 au lait." in text
    assert media.arrays(sequences)["bytes"].dtype == np.uint8


def test_class_rows_one_per_class_or_rows_of_eight() -> None:
    samples, labels = torch.arange(5).float().view(5, 1), torch.tensor([0, 0, 2, 2, 2])
    rows, names = class_rows(samples, labels, num_classes=3)
    assert [len(r) for r in rows] == [2, 0, 3] and names == ["class 0", "class 1", "class 2"]
    rows, names = class_rows(torch.zeros(10, 4), None, num_classes=0)
    assert [len(r) for r in rows] == [8, 2] and names == ["samples 0-7", "samples 8-9"]
