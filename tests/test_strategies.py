"""Strategy, precision and batch-per-device: the derivations, the global-batch data order, and the refusals."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import compose_config, run_cli
from pipeline.config import RUN_NAME_ENV, launch_stamp
from pipeline.data.sampling import GlobalBatchSampler, train_loader
from pipeline.errors import UserError
from pipeline.strategies import build_strategy, check_strategy, device_batch, for_devices, precision, world_size


@pytest.mark.parametrize(
    ("global_batch", "world", "cap", "min_accumulation", "expected"),
    [
        (64, 1, None, 1, (64, 1)),
        (64, 2, None, 1, (32, 1)),
        (64, 2, 8, 1, (8, 4)),
        (48, 2, 20, 1, (12, 2)),  # 24 per device, two micro-batches of 12
        (48, 2, None, 3, (8, 3)),  # an asked-for accumulation
        (20, 2, 4, 1, (2, 5)),  # 10 per device: 3 steps would not divide it, 5 do
        (64, 8, 16, 1, (8, 1)),
    ],
)
def test_the_global_batch_splits_into_devices_and_accumulation(global_batch: int, world: int, cap: int | None, min_accumulation: int, expected: tuple[int, int]) -> None:
    micro, accumulation = device_batch(global_batch, world, cap, min_accumulation)
    assert (micro, accumulation) == expected
    assert micro * accumulation * world == global_batch and (cap is None or micro <= cap)


def test_a_global_batch_that_does_not_split_is_refused() -> None:
    with pytest.raises(UserError, match="data.batch_size=63 is the global batch and must split evenly over 2 devices"):
        device_batch(63, 2)


def _steps(sampler: GlobalBatchSampler, epoch: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_optimizer_step_sees_the_same_global_batch_on_any_device_count(shuffle: bool) -> None:
    """One process with batch 12 against 2 ranks x 3 x accumulation 2 and 3 ranks x 4: the union of
    each step's micro-batches is the same set, and each rank's share is contiguous in the global order."""
    single = _steps(GlobalBatchSampler(50, 12, shuffle=shuffle, seed=7), epoch=1)
    assert len(single) == 4 and all(len(batch) == 12 for batch in single)  # 50 // 12: the ragged rest is dropped
    for world, micro, accumulation in ((2, 3, 2), (3, 4, 1), (4, 1, 3)):
        ranks = [_steps(GlobalBatchSampler(50, micro, world, rank, accumulation, shuffle, seed=7), epoch=1) for rank in range(world)]
        assert all(len(r) == len(single) * accumulation for r in ranks)
        for step, expected in enumerate(single):
            parts = [ranks[rank][step * accumulation + k] for rank in range(world) for k in range(accumulation)]
            assert sum(parts, []) == expected


def test_shuffling_changes_with_the_epoch_and_off_keeps_the_stored_order() -> None:
    shuffled = GlobalBatchSampler(40, 8, shuffle=True, seed=0)
    assert _steps(shuffled, 0) != _steps(shuffled, 1)
    assert _steps(shuffled, 1) == _steps(GlobalBatchSampler(40, 8, shuffle=True, seed=0), 1)
    assert _steps(GlobalBatchSampler(40, 8, shuffle=False), 3) == [list(range(i, i + 8)) for i in range(0, 40, 8)]
    assert len(GlobalBatchSampler(40, 4, world=2, rank=1, accumulation=2)) == 4


def test_for_devices_gives_each_process_its_share_and_leaves_the_input_alone(tmp_path: Path) -> None:
    cfg = compose_config("data=synthetic_image", "trainer.accelerator=cpu", "trainer.devices=2", "strategy=ddp", "device_batch_size=4", root=tmp_path)
    derived = for_devices(cfg)
    assert (derived.data.batch_size, derived.trainer.accumulate_grad_batches) == (4, 4)  # 32 = 2 devices x 4 x 4
    assert cfg.data.batch_size == 32 and cfg.trainer.accumulate_grad_batches == 1
    assert world_size(compose_config("trainer.devices=[0,1,2]", "trainer.num_nodes=2", root=tmp_path)) == 6


def test_16_mixed_on_cpu_becomes_bf16_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert precision(compose_config("trainer.accelerator=cpu", "trainer.precision=16-mixed", root=tmp_path)) == "bf16-mixed"
    assert "16-mixed on CPU becomes bf16-mixed" in caplog.text
    assert precision(compose_config("trainer.precision=bf16-mixed", root=tmp_path)) == "bf16-mixed"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["strategy=fsdp", "trainer.accelerator=cpu"], "strategy=fsdp shards over GPUs (NCCL) and does not run on CPU: use strategy=ddp"),
        (["trainer.precision=17"], "trainer.precision=17 is not a precision; valid: 32-true"),
        (["trainer.devices=zero"], "trainer.devices=zero: give a number of devices"),
    ],
)
def test_what_this_machine_cannot_run_is_refused(tmp_path: Path, overrides: list[str], message: str) -> None:
    cfg = compose_config(*overrides, root=tmp_path)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        for_devices(cfg)


def test_deepspeed_without_its_package_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real_find_spec(name, *a))
    with pytest.raises(UserError, match="strategy=deepspeed needs the deepspeed package, which is not installed: pip install deepspeed"):
        check_strategy(compose_config("strategy=deepspeed", root=tmp_path))


def test_each_strategy_config_builds_its_lightning_strategy(tmp_path: Path) -> None:
    from lightning.pytorch.strategies import DDPStrategy

    assert build_strategy(compose_config("strategy=auto", root=tmp_path)) == "auto"
    for name, start_method in (("ddp", "popen"), ("ddp_spawn", "spawn")):
        strategy = build_strategy(compose_config(f"strategy={name}", root=tmp_path))
        assert isinstance(strategy, DDPStrategy) and strategy._start_method == start_method
    if torch.cuda.is_available():
        from lightning.pytorch.strategies import FSDPStrategy

        assert isinstance(build_strategy(compose_config("strategy=fsdp", root=tmp_path)), FSDPStrategy)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["strategy=fsdp", "trainer.accelerator=cpu"], "strategy=fsdp shards over GPUs (NCCL) and does not run on CPU: use strategy=ddp here (gloo)"),
        (["strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=31"], "data.batch_size=31 is the global batch and must split evenly over 2 devices"),
        (["strategy=horovod"], "unknown strategy option 'horovod'; valid: auto, ddp, ddp_spawn, deepspeed, fsdp"),
        (["--multirun", "strategy=ddp", "seed=1,2"], "--multirun with strategy=ddp would run the whole sweep again in every rank Lightning starts: use strategy=ddp_spawn"),
    ],
)
def test_strategy_mistakes_exit_2_with_one_line_before_any_run_starts(tmp_path: Path, overrides: list[str], expected: str) -> None:
    flags = [o for o in overrides if o.startswith("--")]  # Hydra's flags come before the overrides
    result = run_cli(*flags, f"paths.root={tmp_path}", "data=synthetic_image", "logger=none", *(o for o in overrides if o not in flags), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and expected in error_lines[0], result.stderr[-2000:]
    assert not list(tmp_path.rglob("run.json")) and not list(tmp_path.rglob("*.ckpt"))  # refused before any run started


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TORCHELASTIC_RUN_ID": "abc", "WORLD_SIZE": "4"}, "torchrun-abc"),
        ({"SLURM_JOB_ID": "123", "SLURM_NTASKS": "16"}, "slurm-123"),
        ({"SLURM_JOB_ID": "123", "SLURM_NTASKS": "1"}, None),  # one task: a timestamp
    ],
)
def test_ranks_an_outside_launcher_starts_share_its_id_as_run_name(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str | None) -> None:
    for key in (RUN_NAME_ENV, "TORCHELASTIC_RUN_ID", "WORLD_SIZE", "SLURM_JOB_ID", "SLURM_NTASKS"):
        monkeypatch.setenv(key, "")  # recorded, so what launch_stamp sets is undone after the test
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    name = launch_stamp("RUN", None)
    assert name == expected if expected else name[:2] == "20" and len(name) == len("2026-11-30_06-31-44")
    assert launch_stamp("RUN", None) == name  # fixed for the rest of the launch


class _RecordBatches(L.LightningModule):
    """Records the first example of every training batch; saves a checkpoint after step ``save_at`` of its first run."""

    def __init__(self, checkpoint: Path, save_at: int = 5) -> None:
        super().__init__()
        self.layer, self.checkpoint, self.save_at, self.seen = torch.nn.Linear(1, 1), checkpoint, save_at, []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen.append(int(batch[0][0, 0]))
        return self.layer(batch[0]).mean()

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        if self.global_step == self.save_at and not self.trainer.ckpt_path:
            self.trainer.save_checkpoint(self.checkpoint)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self) -> DataLoader:
        return train_loader(TensorDataset(torch.arange(40.0).view(40, 1)), 4, self.trainer, shuffle=True, seed=0)


@pytest.mark.parametrize("save_at", [5, 10], ids=["mid-epoch", "end-of-epoch"])
def test_lightning_reshuffles_every_epoch_and_a_resume_continues_the_order(tmp_path: Path, save_at: int) -> None:
    """10 batches per epoch, 13 steps; a checkpoint after step 5 (or 10, the epoch's last), resumed: the same batches as without the stop."""
    options = dict(max_steps=13, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    full = _RecordBatches(tmp_path / "saved.ckpt", save_at)
    L.Trainer(**options).fit(full)
    assert full.seen[10:13] != full.seen[:3]  # epoch 1 has its own order
    resumed = _RecordBatches(tmp_path / "unused.ckpt", save_at)
    L.Trainer(**options).fit(resumed, ckpt_path=tmp_path / "saved.ckpt")
    assert resumed.seen == full.seen[save_at:]
