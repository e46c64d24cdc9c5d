"""A DiT that predicts the tokenizer's codes (``objective.prediction=codes``): its code head, the
cross-entropy objective, the sampler that steps towards expected code vectors, and the stage's checks."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_config, train_on_classes
from pipeline.diffusion import DiffusionModule, DiT, RectifiedFlow, guided
from pipeline.diffusion.code_head import CodeHead
from pipeline.errors import UserError
from pipeline.stages.common import code_temperature
from pipeline.stages.dit import build_module
from pipeline.tokenizer.quantizer import VectorQuantizer


def code_dit(**kwargs) -> DiT:
    options = dict(input_size=[8], in_channels=2, patch_size=2, depth=2, hidden_size=64, num_heads=2, num_classes=3, codebook_size=3)
    return DiT(**{**options, **kwargs})


def test_a_code_dit_returns_logits_or_their_expected_code_vector() -> None:
    """At zero init the logits are zero, so the clean estimate is the mean of the (normalized) codes."""
    torch.manual_seed(0)
    model = code_dit()
    model.code_head.set_codebook(torch.tensor([[-2.0, 0.0], [0.0, 2.0], [8.0, 4.0]]))
    model.code_head.set_stats(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]))
    x, t, y = torch.randn(4, 2, 8), torch.rand(4), torch.tensor([0, 1, 2, 3])
    logits = model(x, t, y, logits=True)
    assert logits.shape == (4, 3, 8) and torch.count_nonzero(logits) == 0
    expected_mean = model.code_head.vectors().mean(0)  # normalized (-3, -1), (-1, 0), (7, 1): mean (1, 0)
    assert torch.allclose(expected_mean, torch.tensor([1.0, 0.0]))
    assert torch.allclose(model(x, t, y), expected_mean.view(1, 2, 1).expand(4, 2, 8))
    with pytest.raises(ValueError, match="codebook_size"):
        DiT(input_size=[8], in_channels=2, patch_size=2, depth=1, hidden_size=32, num_heads=2, num_classes=0)(x, t, logits=True)


def test_a_temperature_below_one_sharpens_the_expected_code() -> None:
    head = CodeHead(2, 1)
    head.set_codebook(torch.tensor([[-1.0], [1.0]]))
    logits = torch.tensor([0.0, 1.0]).view(1, 2, 1)
    plain, sharp, flat = (head.expected(logits, temperature).item() for temperature in (1.0, 0.5, 100.0))
    assert plain == pytest.approx(torch.tanh(torch.tensor(0.5)).item()) and sharp == pytest.approx(torch.tanh(torch.tensor(1.0)).item())
    assert sharp > plain > flat > 0


def test_sample_temperature_applies_to_code_dits_only() -> None:
    assert code_temperature(code_dit(), 0.7) == 0.7
    assert code_temperature(code_dit(codebook_size=0), 0.7) == 1.0  # a velocity DiT has no softmax to sharpen
    with pytest.raises(UserError, match="sample.temperature=0"):
        code_temperature(code_dit(), 0.0)
    with pytest.raises(ValueError, match="temperature"):
        code_dit(codebook_size=0)(torch.randn(1, 2, 8), torch.rand(1), temperature=0.5)


@pytest.mark.parametrize("cosine", [False, True], ids=["euclidean", "cosine"])
def test_the_code_head_picks_the_code_the_tokenizer_picks(cosine: bool) -> None:
    """From normalized latents, with the cache's statistics, the head finds the quantizer's own codes."""
    torch.manual_seed(0)
    quantizer = VectorQuantizer(4, 32, kmeans_init=False, cosine=cosine).eval()
    head = CodeHead(32, 4, cosine=cosine)
    head.set_codebook(quantizer.codebooks[0].embed)
    mean, std = torch.tensor([0.5, -1.0, 0.0, 2.0]), torch.tensor([0.3, 2.0, 1.0, 0.7])
    head.set_stats(mean, std)
    raw = torch.randn(5, 4, 7) * 2
    normalized = (raw - mean.view(1, -1, 1)) / std.view(1, -1, 1)
    expected = quantizer(raw.transpose(1, 2)).indices
    assert torch.equal(head.nearest(normalized), expected)
    assert torch.allclose(head.embed(expected) * std.view(1, -1, 1) + mean.view(1, -1, 1), quantizer.codes_to_vectors(expected).transpose(1, 2), atol=1e-6)


def test_the_sampler_lands_on_the_clean_estimate_of_a_code_model() -> None:
    """Two codes, -1 and +1, equally likely: the exact expected code is tanh(signal * x_t / noise variance).
    Stepping towards it, the samples end on the codes (the last step lands on the estimate), half on each."""
    def expected_code(x: torch.Tensor, t: torch.Tensor, x_self=None) -> torch.Tensor:
        return torch.tanh(x * (1 - t) / t**2)

    flow = RectifiedFlow(prediction="codes")
    for sampler in ("euler", "heun"):
        noise = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        samples = flow.sample(expected_code, noise, 10, sampler)
        assert ((samples.abs() - 1).abs() < 1e-4).double().mean().item() > 0.99
        assert (samples > 0).double().mean().item() == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="prediction"):
        RectifiedFlow(prediction="logits")


@pytest.mark.parametrize("self_condition", [False, True], ids=["plain", "self-conditioned"])
def test_a_tiny_code_dit_learns_which_code_each_class_uses(self_condition: bool) -> None:
    """Class c's latents all quantize to code c: cross-entropy training falls, guided samples land on their class's code."""
    torch.manual_seed(0)
    model = code_dit(self_condition=self_condition)
    codes = torch.tensor([[-1.0, 1.0], [0.0, -1.0], [1.0, 1.0]])
    model.code_head.set_codebook(codes)
    flow = RectifiedFlow(prediction="codes")
    first, last = train_on_classes(model, flow, lambda y: codes[y].view(64, 2, 1).expand(64, 2, 8) + 0.1 * torch.randn(64, 2, 8), 300)  # latents near their code
    assert last < 0.2 * first
    labels = torch.arange(3).repeat_interleave(8)
    generator = torch.Generator().manual_seed(1)
    samples = flow.sample(guided(model, labels, 2.0, torch.full_like(labels, 3)), torch.randn(24, 2, 8, generator=generator), 10)
    assert (model.code_head.nearest(samples) == labels.view(-1, 1)).float().mean().item() > 0.95


def test_a_code_objective_and_a_code_dit_go_together() -> None:
    with pytest.raises(ValueError, match="codebook_size"):
        DiffusionModule(code_dit(codebook_size=0), RectifiedFlow(prediction="codes"), torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="codebook_size"):
        DiffusionModule(code_dit(), RectifiedFlow(), torch.zeros(2), torch.ones(2))


def test_text_predicts_codes_by_default_and_a_residual_tokenizer_is_refused() -> None:
    """The stage sizes the head to the tokenizer's codebook and copies its codes (into the EMA copy too);
    a tokenizer with several books has no single code per latent: one clear line."""
    cfg = compose_config("stage=dit", "data=synthetic_text", "dit.depth=1")
    assert cfg.objective.prediction == "codes" and compose_config("stage=dit", "data=synthetic_audio").objective.prediction == "velocity"
    tokenizer = instantiate(cfg.vqvae)
    tokenizer.tokenizer_metadata = {"latent_shape": [tokenizer.quantizer.dim, cfg.data.seq_length // 2]}
    module = build_module(cfg, tokenizer)
    assert module.model.config["codebook_size"] == tokenizer.quantizer.codebook_size
    assert torch.equal(module.ema.module.code_head.codebook, tokenizer.quantizer.codebooks[0].embed)
    residual = instantiate(compose_config("stage=dit", "data=synthetic_text", "vqvae.quantizer.num_quantizers=2").vqvae)
    residual.tokenizer_metadata = tokenizer.tokenizer_metadata
    with pytest.raises(UserError, match="one codebook, this one has 2"):
        build_module(cfg, residual)
