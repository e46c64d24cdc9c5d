"""The autoregressive baseline prior: causal next-code prediction, KV-cached sampling, learning, decoding."""

from __future__ import annotations

import torch

from pipeline.ar import ARPrior, CodeDataset, quantize_to_codes
from pipeline.tokenizer import VQVAE


def tiny_prior(**kwargs) -> ARPrior:
    torch.manual_seed(0)
    return ARPrior(**{**dict(vocab_size=11, length=6, num_classes=3, depth=2, width=32, num_heads=2), **kwargs})


def test_a_position_sees_only_the_codes_before_it() -> None:
    model = tiny_prior()
    codes = torch.randint(0, 11, (2, 6))
    logits = model(codes, torch.tensor([0, 2]))
    assert logits.shape == (2, 6, 11)
    changed = codes.clone()
    changed[:, 3] = (codes[:, 3] + 1) % 11
    after = model(changed, torch.tensor([0, 2]))
    assert torch.allclose(logits[:, :4], after[:, :4], atol=1e-6)  # position 3's own code is predicted, not read
    assert not torch.allclose(logits[:, 4:], after[:, 4:])
    assert not torch.allclose(logits[:1, 0], model(codes, torch.tensor([1, 2]))[:1, 0])  # the class start token matters


def test_cached_sampling_matches_a_full_forward_per_step() -> None:
    model = tiny_prior().eval()
    y = torch.tensor([0, 1, 2])
    greedy = model.sample(y, 3, top_k=1)
    assert greedy.shape == (3, 6) and greedy.dtype == torch.long
    for position in range(6):  # recompute each step without the cache: the same argmax
        assert torch.equal(model(greedy, y)[:, position].argmax(-1), greedy[:, position])
    generator = torch.Generator().manual_seed(3)
    first = model.sample(y, 3, temperature=0.8, top_k=4, generator=generator)
    again = model.sample(y, 3, temperature=0.8, top_k=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and int(first.min()) >= 0 and int(first.max()) < 11


def test_the_prior_learns_a_sequence_per_class_and_samples_it() -> None:
    model = tiny_prior(num_classes=3, length=5, vocab_size=8)
    patterns = torch.tensor([[1, 2, 3, 4, 5], [7, 7, 0, 0, 7], [6, 5, 4, 3, 2]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        y = torch.randint(0, 3, (32,))
        loss = model.loss(patterns[y], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    samples = model.eval().sample(torch.tensor([2, 0, 1]), 3, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, patterns[[2, 0, 1]])


def test_codes_of_cached_latents_decode_through_the_tokenizer() -> None:
    from conftest import compose_config
    from hydra.utils import instantiate

    torch.manual_seed(0)
    tokenizer: VQVAE = instantiate(compose_config("data=synthetic_image").vqvae).eval()
    images = torch.rand(5, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        latents = tokenizer.encode(images)
    cached = torch.stack([latents, latents.flip(-1)], dim=1).numpy()  # (N, views, D, 7, 7) as the cache stores it
    codes = quantize_to_codes(tokenizer, cached, batch_size=2)
    assert codes.shape == (5, 2, 49) and codes.dtype == torch.long
    assert torch.equal(codes[:, 0].view(5, 7, 7), tokenizer.quantize(latents).indices)
    with torch.no_grad():
        decoded = tokenizer.decode_indices(codes[:, 0].view(5, 7, 7))
        assert torch.allclose(decoded, tokenizer.decode(tokenizer.quantize(latents).quantized), atol=1e-5)
    dataset = CodeDataset(codes, torch.arange(5))
    code, label = dataset[3]
    assert code.shape == (49,) and int(label) == 3 and any(torch.equal(code, codes[3, v]) for v in range(2))
