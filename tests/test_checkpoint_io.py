"""Checkpoints are replaced atomically: a save that dies half-way leaves the previous one whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.checkpoint_io import AtomicCheckpointIO


class _Unpicklable:
    def __reduce__(self) -> tuple:
        raise RuntimeError("killed half-way through the write")


def test_a_save_that_fails_half_way_leaves_the_old_checkpoint_whole(tmp_path: Path) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "weights": torch.arange(100_000)}, path)
    with pytest.raises(RuntimeError, match="half-way"):
        io.save_checkpoint({"global_step": 2, "weights": torch.arange(100_000), "late": _Unpicklable()}, path)
    loaded = io.load_checkpoint(path, weights_only=True)
    assert loaded["global_step"] == 1 and torch.equal(loaded["weights"], torch.arange(100_000))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind
