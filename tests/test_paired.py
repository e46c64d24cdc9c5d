"""Paired data for cross-modal stage two: prompts from templates and clips, pairing by digit, the configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hydra.utils import instantiate

from conftest import compose_config
from pipeline.data.paired import DIGIT_WORDS, AudioPrompts, TextPrompts
from pipeline.data.text import PAD
from pipeline.diffusion.latents import LatentDataset
from pipeline.diffusion.paired_latents import PairedLatentDataset, PromptBank, as_prompts, channel_stats
from pipeline.errors import UserError


def test_text_prompts_fill_every_template_for_every_digit_at_every_shift_and_hold_some_out() -> None:
    prompts = TextPrompts(["{word}", "the digit {digit}"], ["a handwritten {word}"], seq_length=64, max_bytes=24, shifts=2)
    examples, digits = prompts.examples("train")
    assert examples.shape == (40, 64) and examples.dtype == torch.long
    assert digits.tolist() == list(range(10)) * 4
    texts = [bytes(row[row != PAD].tolist()).decode() for row in examples]
    assert texts[3] == "three" and texts[17] == "the digit 7" and texts[23] == " three" and texts[37] == " the digit 7"
    held, held_digits = prompts.examples("test")
    assert held.shape == (10, 64) and bytes(held[7][held[7] != PAD].tolist()).decode() == "a handwritten seven" and held_digits[7] == 7
    assert torch.equal(prompts.load("a handwritten three")[0], prompts.format.encode("a handwritten three"))
    assert prompts.prompt_latents(32) == 12 and prompts.prompt_latents(16) == 6  # 24 of 64 bytes at 2 and at 4 bytes per latent
    with pytest.raises(UserError, match="1 to 24 bytes"):
        prompts.load("x" * 25)
    with pytest.raises(UserError, match="must not be training templates"):
        TextPrompts(["{word}"], ["{word}"])
    with pytest.raises(UserError, match=r"must fit in max_bytes=16 \(with 3 leading spaces in training\): '   the digit zero'"):
        TextPrompts(["the digit {word}"], ["{word}"], max_bytes=16, shifts=4)
    with pytest.raises(UserError, match=r"0 < max_bytes <= seq_length \(16\); got max_bytes=32"):
        TextPrompts(["{word}"], ["a {word}"], seq_length=16, max_bytes=32)
    with pytest.raises(UserError, match="shifts >= 1; got 0"):
        TextPrompts(["{word}"], ["a {word}"], shifts=0)


def test_a_text_prompt_that_is_an_audio_file_is_refused(tmp_path: Path) -> None:
    clip = tmp_path / "seven.wav"
    soundfile.write(clip, np.zeros(800, dtype=np.float32), 8000)
    with pytest.raises(UserError, match="is an audio file, but this DiT reads text prompts"):
        TextPrompts(["{word}"], ["the {word}"]).load(str(clip))


def test_audio_prompts_read_a_clip_as_the_data_module_prepares_one(tmp_path: Path) -> None:
    cfg = compose_config("data=synthetic_audio", "data.clip_length=1024", root=tmp_path)
    prompts = AudioPrompts(instantiate(cfg.data))
    assert prompts.example_shape == [1, 1024]
    t = np.arange(1600) / 16000  # 0.1 s at 16 kHz: resampled to 8 kHz, then padded to 1,024 samples
    soundfile.write(tmp_path / "loud.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
    clip = prompts.load(str(tmp_path / "loud.wav"))
    assert clip.shape == (1, 1, 1024) and abs(float(clip.abs().max()) - 0.95) < 1e-3 and torch.all(clip[..., 850:] == 0)
    soundfile.write(tmp_path / "silent.wav", np.zeros(800, dtype=np.float32), 8000)
    with pytest.raises(UserError, match="is silent"):
        prompts.load(str(tmp_path / "silent.wav"))
    with pytest.raises(UserError, match="must be an audio file"):
        prompts.load("a handwritten three")


def test_each_image_gets_a_prompt_of_its_own_digit_random_in_training_fixed_in_validation() -> None:
    torch.manual_seed(0)
    prompt_latents = torch.randn(30, 2, 4) + torch.arange(30).view(30, 1, 1).float()  # prompt i: values near i
    prompt_digits = torch.arange(30) % 3
    mean, std = channel_stats(prompt_latents)
    bank = PromptBank(as_prompts(prompt_latents, mean, std), prompt_digits)
    assert bank.prompts.shape == (30, 3, 4) and torch.all(bank.prompts[:, -1] == 1)
    image_labels = np.array([0, 1, 2, 1, 0, 2] * 4)
    images = LatentDataset(np.random.default_rng(0).normal(size=(24, 1, 4, 2, 2)).astype(np.float32), image_labels, torch.zeros(4), torch.ones(4))

    def digit_of(prompt: torch.Tensor) -> int:
        (index,) = [i for i in range(30) if torch.equal(bank.prompts[i], prompt)]
        return int(prompt_digits[index])

    train = PairedLatentDataset(images, bank)
    items = train.__getitems__(list(range(24)))
    assert [digit_of(prompt) for _, prompt in items] == image_labels.tolist()
    assert len({tuple(prompt.flatten().tolist()) for _, prompt in items}) > 3  # random prompts, not one per digit
    val = PairedLatentDataset(images, bank, fixed=True)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(val.__getitems__([0, 1, 2]), val.__getitems__([0, 1, 2])))
    with pytest.raises(ValueError, match="no prompt for labels"):
        bank.for_labels(torch.tensor([5]))


def test_paired_data_shares_the_image_and_audio_settings_of_their_own_data_configs(tmp_path: Path) -> None:
    """Same settings, same prepared data and caches: data=paired must not drift from data=mnist and data=spoken_digits."""
    paired = instantiate(compose_config("stage=dit", "data=paired", "condition=audio", root=tmp_path).data)
    assert paired.name == "paired_audio" and paired.prompt_source is paired.prompts["audio"]
    assert paired.image.spec == instantiate(compose_config("data=mnist", root=tmp_path).data).spec
    assert paired.prompts["audio"].data.spec == instantiate(compose_config("data=spoken_digits", root=tmp_path).data).spec
    texts, digits = TextPrompts.fill(["a handwritten {word}"])
    assert texts[9] == f"a handwritten {DIGIT_WORDS[9]}" and digits[9] == 9
    with pytest.raises(UserError, match="has no text prompts"):
        instantiate(compose_config("stage=dit", "data=paired", "condition=text", "~data.prompts.text", root=tmp_path).data).prompt_source
