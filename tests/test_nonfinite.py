"""Non-finite gradients: the step is skipped with a warning; too many in a row stop the run with the weights from before."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import only_run, run_cli
from pipeline.errors import Diverged
from pipeline.nonfinite import SkipNonFiniteSteps


class PoisonedRegression(L.LightningModule):
    """A linear fit whose loss is NaN on the steps listed in ``poisoned``; records the weights after each step."""

    def __init__(self, poisoned: set[int]) -> None:
        super().__init__()
        self.layer, self.poisoned, self.history = nn.Linear(4, 1), poisoned, []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        return loss * float("nan") if self.global_step in self.poisoned else loss

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        self.history.append(self.layer.weight.detach().clone())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=0.1)


def _fit(module: PoisonedRegression, guard: SkipNonFiniteSteps, steps: int) -> None:
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=8)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[guard])
    trainer.fit(module, data)


def test_a_nan_step_is_skipped_and_training_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    module, guard = PoisonedRegression(poisoned={2, 3, 5}), SkipNonFiniteSteps(3, tmp_path / "before.ckpt")
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        _fit(module, guard, steps=7)
    weights = module.history
    for step in (2, 3, 5):  # nothing applied: the weights after the step equal those before it
        assert torch.equal(weights[step], weights[step - 1])
    for step in (1, 4, 6):
        assert not torch.equal(weights[step], weights[step - 1])
    assert guard.skipped == 3 and guard.in_a_row == 0 and not (tmp_path / "before.ckpt").exists()
    assert "step 3: non-finite gradients, step skipped (2 in a row, the run stops at 3)" in caplog.text


def test_too_many_in_a_row_stop_with_the_weights_from_before(tmp_path: Path) -> None:
    module, guard = PoisonedRegression(poisoned={3, 4, 5, 6}), SkipNonFiniteSteps(3, tmp_path / "before.ckpt")
    with pytest.raises(Diverged, match="3 steps in a row up to step 5"):
        _fit(module, guard, steps=10)
    saved = torch.load(tmp_path / "before.ckpt", weights_only=True)["state_dict"]["layer.weight"]
    assert torch.equal(saved, module.history[2])  # the weights after the last finite step


def test_a_diverging_cli_run_ends_with_one_line_and_keeps_its_checkpoint(tmp_path: Path) -> None:
    result = run_cli(
        "stage=vqvae", "data=synthetic_image", "data.synthetic_per_class=20", "data.val_size=20", "data.test_size=20", "logger=csv", "debug=fast",
        f"paths.root={tmp_path}", "vqvae.optimizer.lr=1e30", "nonfinite_patience=3", cwd=tmp_path,
    )
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: training diverged: 3 steps in a row") and "Traceback" not in result.stderr
    run_dir = only_run(tmp_path)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    state = torch.load(run_dir / "checkpoints" / "before-divergence.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
