"""Lightning checkpoints written atomically: a temporary file beside the target, then a rename.

Lightning's own ``TorchCheckpointIO`` serialises into memory and then writes over the target in
place, so a kill during that write (a preempted job, an OOM kill) leaves a truncated
``last.ckpt`` and a run that cannot resume. Here the old file stays whole until the new one is.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH

from pipeline.fileio import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into memory (as Lightning's own does), then into ``.<name>.<random>.tmp`` in the same
    folder, fsync, ``os.replace``. Writing the bytes in one call keeps the ``OSError`` of a full disk,
    which torch's zip writer would turn into a generic ``RuntimeError``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))
