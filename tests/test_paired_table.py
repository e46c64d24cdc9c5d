"""data=paired_table: images and prompts from the columns of one local table, paired row by row (and through the CLI)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from conftest import assert_one_error_line, compose_config, run_cli, untrained_tokenizer
from pipeline.data.paired import DIGIT_WORDS
from pipeline.data.text import PAD
from pipeline.diffusion.paired_latents import PairedLatentDataset, PromptBank
from pipeline.diffusion.latents import LatentDataset
from pipeline.errors import UserError
from pipeline.stages.sample import prompt_conditions

ROWS = 60


def write_table(folder: Path, rows: int = ROWS, text: str = "a {word} #{row}") -> Path:
    """``folder/table.csv``: per row an image file, a text, an audio file and a label, all saying which row they are
    (the image's first pixel and the clip's length hold the row number) so a test can see that the columns stay paired."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "clips").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    with (folder / "table.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "text", "audio", "label"])
        for row in range(rows):
            label = row % 10
            pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            pixels[0, 0] = row
            Image.fromarray(pixels).save(folder / "images" / f"{row}.png")
            soundfile.write(folder / "clips" / f"{row}.wav", np.full(200 + 10 * row, 0.5, dtype=np.float32), 8000)
            writer.writerow([f"images/{row}.png", text.format(word=DIGIT_WORDS[label], row=row), f"clips/{row}.wav", label])
    return folder / "table.csv"


def table_data(root: Path, table: Path, *overrides: str):  # noqa: ANN201 (a PairedData)
    cfg = compose_config("stage=dit", "data=paired_table", f"data.table={table}", "data.image.val_size=10", "data.image.test_size=10",
                         "data.prompts.text.data.seq_length=64", "data.prompts.audio.data.clip_length=1024", *overrides, root=root)
    return instantiate(cfg.data)


def test_every_column_of_a_local_table_keeps_its_rows_in_every_split(tmp_path: Path) -> None:
    paired = table_data(tmp_path, write_table(tmp_path / "table"), "condition=text")
    paired.image.prepare_data()
    paired.image.setup()
    texts, audio = paired.prompts["text"], paired.prompts["audio"]
    assert paired.prompt_source is texts and texts.table_data is not None and audio.table_data is not None
    texts.prepare()
    audio.prepare()
    seen = []
    for split, size in (("train", 40), ("val", 10), ("test", 10)):
        image_rows = paired.image.splits[split].images[:, 0, 0, 0].tolist()
        prompts, labels = texts.examples(split)
        text_rows = [int(bytes(row[row != PAD].tolist()).decode().split("#")[1]) for row in prompts]
        clips, clip_labels = audio.examples(split)
        clip_rows = [(int((clip != 0).sum()) - 200) // 10 for clip in clips[:, 0]]
        assert len(image_rows) == size and image_rows == text_rows == clip_rows
        assert torch.equal(labels, paired.image.splits[split].labels) and torch.equal(clip_labels, labels)
        seen += image_rows
    assert sorted(seen) == list(range(ROWS))  # every row in exactly one split
    assert (tmp_path / "data" / "table_images").is_dir() and (tmp_path / "data" / "table_text").is_dir() and (tmp_path / "data" / "table_audio").is_dir()


def test_prompts_paired_by_row_go_with_their_own_image(tmp_path: Path) -> None:
    images = LatentDataset(np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1), np.array([0, 1, 0, 1, 0, 1]), torch.zeros(1), torch.ones(1))
    bank = PromptBank(torch.arange(6, dtype=torch.float32).view(6, 1, 1) * 10, torch.tensor([0, 1, 0, 1, 0, 1]))
    items = PairedLatentDataset(images, bank, by_row=True).__getitems__([4, 1, 3])
    assert [(float(latent), float(prompt)) for latent, prompt in items] == [(4.0, 40.0), (1.0, 10.0), (3.0, 30.0)]


def test_sampling_without_a_prompt_draws_one_held_out_row_per_label_the_test_rows_have() -> None:
    """A table's test rows need not hold every class: samples cycle over the labels they do hold."""
    source = SimpleNamespace(examples=lambda split: (torch.arange(5.0).view(5, 1), torch.tensor([7, 2, 7, 4, 2])))
    generator = SimpleNamespace(conditions=lambda examples: examples * 10)
    cfg = OmegaConf.create({"sample": {"num": 5, "prompt": None}})
    conditions, labels, _ = prompt_conditions(cfg, generator, SimpleNamespace(prompt_source=source))
    assert labels.tolist() == [2, 2, 4, 4, 7] and conditions.flatten().tolist() == [10.0, 10.0, 30.0, 30.0, 0.0]  # the first row of each label


def test_table_mistakes_are_one_line(tmp_path: Path) -> None:
    table = write_table(tmp_path / "table", rows=30)
    for override, expected in (
        ("data.prompts.text.data.val_size=5", r"must be a column of the images' table, split alike.*val_size 10 \(images\) != 5 \(table_text\)"),
        ("data.image.hub_id=elsewhere", "its images come from elsewhere"),
    ):
        with pytest.raises(HydraException) as refused:  # a constructor's UserError, wrapped by instantiate (the CLI unwraps it)
            table_data(tmp_path, table, "condition=text", override)
        assert isinstance(refused.value.__cause__, UserError) and re.search(expected, str(refused.value.__cause__))
    with pytest.raises(UserError, match=r"has columns \[.*\], not \['caption'\]; set data.prompts.text.data.text_column"):
        table_data(tmp_path, table, "condition=text", "data.prompts.text.data.text_column=caption").prompts["text"].prepare()
    long = write_table(tmp_path / "long", rows=30, text="a rather long description of the digit {word}, row {row}")
    with pytest.raises(UserError, match="must be 1 to 32 bytes of UTF-8"):
        table_data(tmp_path, long, "condition=text").prompts["text"].prepare()
    empty = write_table(tmp_path / "empty", rows=30, text="")  # empty cells: read as None, refused rather than sent as "None"
    with pytest.raises(UserError, match="got 0: ''"):
        table_data(tmp_path, empty, "condition=text").prompts["text"].prepare()


@pytest.mark.slow  # 30 s, a third prompt DiT: make test stays under 10 minutes; the tests above cover the table's own paths
def test_a_text_prompt_dit_trains_on_a_local_table(tmp_path: Path) -> None:
    """Through the CLI: the texts of a CSV's rows with the images those rows name, paired row by row; a column split
    unlike the images is refused in one line."""
    image_tokenizer = untrained_tokenizer(tmp_path / "image", "data=synthetic_image")
    text_tokenizer = untrained_tokenizer(tmp_path / "text", "data=synthetic_text", "data.seq_length=64")
    table = write_table(tmp_path / "rows")
    args = (f"paths.root={tmp_path}", "data=paired_table", f"data.table={table}", "data.image.val_size=10", "data.image.test_size=10", "data.batch_size=16",
            "condition=text", "data.prompts.text.data.seq_length=64", "condition.encoder.patch_size=4", f"tokenizer_ckpt={image_tokenizer}",
            f"condition.tokenizer_ckpt={text_tokenizer}", "logger=csv")
    trained = run_cli("stage=dit", "debug=fast", "trainer.max_steps=6", "trainer.val_check_interval=6", "stage.grid_steps=2", *args, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = tmp_path / "outputs" / "table_text" / "dit" / "latest"
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert torch.load(run / "dit.pt", weights_only=True)["metadata"]["condition"]["length"] == 16  # 32 of the tokenizer's 64 bytes
    assert (tmp_path / "outputs" / "table_images" / "latents").is_dir() and (tmp_path / "data" / "table_text").is_dir()

    misaligned = run_cli("stage=sample", "sample.num=2", *args, "data.prompts.text.data.val_size=5", cwd=tmp_path)
    assert_one_error_line(misaligned, "data=table_text: the text prompts must be a column of the images' table, split alike", "val_size 10 (images) != 5")
