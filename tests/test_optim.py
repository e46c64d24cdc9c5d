"""The Muon optimizer (conv filters and matrices) with its AdamW path, and where the configs use it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from conftest import compose_config, run_cli
from pipeline.optim import Muon, orthogonalize, warmup_cosine_schedule


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.SiLU(), nn.Flatten(), nn.Linear(8 * 16, 4))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(32, 2, 16, generator=generator), torch.randn(32, 4, generator=generator)


@pytest.mark.parametrize("shape", [(8, 1, 7), (16, 8, 3), (64, 32), (4, 64)])
def test_orthogonalize_gives_about_orthonormal_rows_or_columns(shape: tuple[int, ...]) -> None:
    update = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    out = orthogonalize(update)
    assert out.shape == update.shape
    singular = torch.linalg.svdvals(out.reshape(shape[0], -1))
    assert singular.min() > 0.5 and singular.max() < 1.3  # Newton-Schulz lands near 1, not on it
    assert (out * update).sum() > 0  # it still points along the update


def test_muon_takes_the_matrices_and_leaves_the_rest_to_adamw() -> None:
    net = _net()
    optimizer = Muon(net.parameters(), lr=1e-3, muon_lr=2e-2, weight_decay=0.1)
    muon, adamw = optimizer.param_groups
    assert muon["muon"] and not adamw["muon"]
    assert {id(p) for p in muon["params"]} == {id(net[0].weight), id(net[4].weight)}
    assert (muon["lr"], adamw["lr"]) == (2e-2, 1e-3)
    x, y = _batch()
    nn.functional.mse_loss(net(x), y).backward()
    optimizer.step()
    assert set(optimizer.state[net[0].weight]) == {"momentum_buffer"}
    assert set(optimizer.state[net[0].bias]) == {"step", "exp_avg", "exp_avg_sq"}


def test_its_adamw_path_matches_torch_adamw() -> None:
    ours = nn.Parameter(torch.randn(10, generator=torch.Generator().manual_seed(0)))
    reference = nn.Parameter(ours.detach().clone())
    mine = Muon([ours], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    theirs = torch.optim.AdamW([reference], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for step in range(5):
        target = torch.full((10,), float(step))
        for p, opt in ((ours, mine), (reference, theirs)):
            opt.zero_grad()
            (p - target).pow(2).sum().backward()
            opt.step()
    torch.testing.assert_close(ours, reference)


def test_muon_trains_a_small_conv_net() -> None:
    net = _net()
    optimizer = Muon(net.parameters(), lr=3e-3, muon_lr=2e-2)
    x, y = _batch()
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_muon_state_survives_a_weights_only_checkpoint() -> None:
    x, y = _batch()

    def trained(steps: int, state: dict | None = None) -> tuple[nn.Module, Muon]:
        net = _net()
        optimizer = Muon(net.parameters(), lr=3e-3, muon_lr=2e-2)
        if state is not None:
            net.load_state_dict(state["net"])
            optimizer.load_state_dict(state["opt"])
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            optimizer.step()
        return net, optimizer

    net, optimizer = trained(3)
    buffer = io.BytesIO()
    torch.save({"net": net.state_dict(), "opt": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    resumed, _ = trained(2, torch.load(buffer, weights_only=True))
    straight, _ = trained(5)
    for a, b in zip(resumed.parameters(), straight.parameters()):
        torch.testing.assert_close(a, b)


def test_the_schedule_scales_both_learning_rates() -> None:
    optimizer = Muon(_net().parameters(), lr=1e-3, muon_lr=1e-2)
    warmup_cosine_schedule(optimizer, total_steps=100, warmup_steps=10)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 1e-4])


def test_the_spoken_digit_tokenizer_trains_with_muon_and_the_others_with_adamw() -> None:
    cfg = compose_config("stage=vqvae", "data=spoken_digits")
    model = instantiate(cfg.vqvae)
    optimizer = model.optimizer_factory(params=model.parameters())
    assert isinstance(optimizer, Muon)
    assert [g["lr"] for g in optimizer.param_groups] == [cfg.vqvae.optimizer.muon_lr, cfg.vqvae.optimizer.lr]
    for data in ("fortunes", "mnist"):
        other = instantiate(compose_config("stage=vqvae", f"data={data}").vqvae)
        assert type(other.optimizer_factory(params=other.parameters())) is torch.optim.AdamW


def test_a_tokenizer_trains_with_muon_through_the_cli_and_checkpoints_its_state(tmp_path: Path) -> None:
    result = run_cli(
        "stage=vqvae", f"paths.root={tmp_path}", "data=synthetic_audio", "data.synthetic_per_class=4", "data.val_size=8", "data.test_size=8",
        "data.clip_length=1024", "data.batch_size=8", "debug=fast", "logger=csv", "trainer.max_steps=4", "trainer.val_check_interval=2",
        "vqvae.optimizer._target_=pipeline.optim.Muon", "+vqvae.optimizer.muon_lr=5e-3", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = [p for p in (tmp_path / "outputs" / "synthetic_audio" / "vqvae").iterdir() if p.name != "latest"]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    (state,) = checkpoint["optimizer_states"]
    assert [g["muon"] for g in state["param_groups"]] == [True, False]
    assert any("momentum_buffer" in s for s in state["state"].values())
