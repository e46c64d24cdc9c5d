"""Code corruption (a denoising decoder): what it swaps, that it leaves codebooks alone, and that the
VQ-VAE applies it only to the decoder's input in training."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from conftest import compose_config
from pipeline.errors import UserError
from pipeline.tokenizer import VQVAE, CodeCorruption, TextDecoder, TextEncoder, TextReconstruction, VectorQuantizer


def trained_quantizer(num_quantizers: int = 1, codebook_size: int = 32, dim: int = 4) -> VectorQuantizer:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(dim, codebook_size, num_quantizers=num_quantizers)
    quantizer.train()
    quantizer(torch.randn(4, 256, dim))  # k-means initialisation on a first batch
    return quantizer.eval()


def codebook_state(quantizer: VectorQuantizer) -> list[torch.Tensor]:
    return [t.clone() for t in quantizer.state_dict().values()]


@pytest.mark.parametrize("num_quantizers", [1, 2])
def test_requantize_matches_forward_and_leaves_codebooks_alone(num_quantizers: int) -> None:
    quantizer = trained_quantizer(num_quantizers)
    quantizer.train()  # forward would update the codebooks here; requantize must not
    before = codebook_state(quantizer)
    x = torch.randn(3, 10, 4)
    requantized = quantizer.requantize(x)
    for old, new in zip(before, codebook_state(quantizer)):
        assert torch.equal(old, new)
    quantizer.eval()
    torch.testing.assert_close(requantized, quantizer(x).quantized)


def test_no_strength_swaps_nothing() -> None:
    quantizer = trained_quantizer()
    quantized = quantizer(torch.randn(2, 16, 4))
    out, swapped = CodeCorruption()(quantized.indices, quantizer)
    assert not swapped.any()
    torch.testing.assert_close(out, quantized.quantized)


@pytest.mark.parametrize("num_quantizers", [1, 2])
def test_swapped_latents_are_code_vectors_and_the_rest_is_kept(num_quantizers: int) -> None:
    quantizer = trained_quantizer(num_quantizers)
    quantized = quantizer(torch.randn(64, 16, 4))
    z_q = quantized.quantized
    torch.manual_seed(1)
    out, swapped = CodeCorruption(max_noise=0.5, max_replace=0.5)(quantized.indices, quantizer)
    assert 0 < swapped.float().mean() < 0.9
    torch.testing.assert_close(out[~swapped], z_q[~swapped])
    levels = torch.cartesian_prod(*[torch.arange(quantizer.codebook_size)] * num_quantizers).view(1, -1, num_quantizers)
    every_code = quantizer.codes_to_vectors(levels)[0]  # every code (residual: every sum of one code per level)
    assert torch.cdist(out[swapped], every_code).min(dim=1).values.max() < 1e-2  # cdist rounds at ~1e-3
    codes = quantizer.codes_to_vectors(quantized.indices)
    assert not (out[swapped] == codes[swapped]).all(dim=-1).any()


def test_replacement_share_is_drawn_per_sequence() -> None:
    quantizer = trained_quantizer(codebook_size=256)
    indices = quantizer(torch.randn(400, 64, 4)).indices
    torch.manual_seed(2)
    _, swapped = CodeCorruption(max_replace=0.4)(indices, quantizer)
    shares = swapped.float().mean(dim=1)
    # U(0, 0.4) per sequence, less the few random codes that equal the original (1 in 256)
    assert shares.mean().item() == pytest.approx(0.2, abs=0.02)
    assert shares.min().item() < 0.03 and shares.max().item() > 0.33


def test_noise_moves_latents_to_nearby_codes() -> None:
    quantizer = trained_quantizer(codebook_size=256)
    quantized = quantizer(torch.randn(200, 32, 4))
    z_q = quantized.quantized
    torch.manual_seed(3)
    noisy, moved = CodeCorruption(max_noise=0.3)(quantized.indices, quantizer)
    random, replaced = CodeCorruption(max_replace=1.0)(quantized.indices, quantizer)
    assert moved.any() and replaced.any()
    near = (noisy - z_q).norm(dim=-1)[moved].mean()
    far = (random - z_q).norm(dim=-1)[replaced].mean()
    assert near < 0.5 * far


def test_invalid_strengths_raise() -> None:
    with pytest.raises(UserError, match="max_replace"):
        CodeCorruption(max_replace=1.5)
    with pytest.raises(UserError, match="max_noise"):
        CodeCorruption(max_noise=-0.1)


def tiny_text_vqvae(corruption: CodeCorruption | None) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(TextEncoder(256, [16, 32], [2], 1, 4), TextDecoder(256, [16, 32], [2], 1, 4), VectorQuantizer(4, 16), TextReconstruction(),
                 code_corruption=corruption)


def test_the_encoder_learns_only_through_the_codes_kept() -> None:
    model = tiny_text_vqvae(CodeCorruption(max_replace=0.9))
    model.train()
    quantized = model.quantize(model.encode(torch.randint(1, 256, (16, 32))))
    z_q = quantized.quantized.detach().requires_grad_(True)
    torch.manual_seed(4)
    decoder_input = model._corrupted(dataclasses.replace(quantized, quantized=z_q))
    decoder_input.sum().backward()
    swapped = (decoder_input != z_q).any(dim=1)  # (B, positions)
    assert swapped.any() and (~swapped).any()
    grad = z_q.grad.abs().sum(dim=1)
    assert (grad[swapped] == 0).all() and (grad[~swapped] > 0).all()


def test_corruption_acts_in_training_only() -> None:
    x = torch.randint(1, 256, (8, 32))
    clean, corrupted = tiny_text_vqvae(None), tiny_text_vqvae(CodeCorruption(max_replace=1.0))
    corrupted.load_state_dict(clean.state_dict())
    for model in (clean, corrupted):
        model.train()
        model.quantize(model.encode(x))  # the same k-means initialisation in both
    clean.eval(), corrupted.eval()
    torch.testing.assert_close(corrupted._losses(x)[0]["loss"], clean._losses(x)[0]["loss"])
    output, _ = clean(x)
    torch.testing.assert_close(clean._losses(x)[0]["rec_loss"], F.cross_entropy(output, x))
    corrupted.train()
    torch.manual_seed(5)
    assert not torch.allclose(corrupted._losses(x)[1], clean.train()._losses(x)[1])


def test_text_tokenizers_train_with_corruption_and_the_others_without() -> None:
    text = compose_config("stage=vqvae", "data=fortunes").vqvae.code_corruption
    assert text._target_ == "pipeline.tokenizer.CodeCorruption" and text.max_noise > 0 and text.max_replace > 0
    for data in ("mnist", "spoken_digits"):
        assert compose_config("stage=vqvae", f"data={data}").vqvae.code_corruption is None
