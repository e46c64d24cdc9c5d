"""Stopping on a signal without losing the run: SIGTERM and SIGUSR1 save ``last.ckpt`` and end the process.

SIGTERM is what ``kill``, Kubernetes and most schedulers send before SIGKILL; SIGUSR1 is SLURM's
usual preemption warning (``#SBATCH --signal=SIGUSR1@90``). Lightning already turns SIGTERM into a
``SIGTERMException`` at the end of the current step on every rank (rank 0 forwards the signal to
the ranks it started and broadcasts it at every step). :class:`CheckpointOnSignal` turns SIGUSR1
into a SIGTERM to this process, so both take that one path; it saves the checkpoint when the
exception passes, and the stage reports :class:`Interrupted`: ``run.json`` says ``interrupted``,
and the process ends with the shell's status for the signal (128 + its number) and one line
giving the command that continues it (``resume=<run dir>``).

Under SLURM with Lightning's auto-requeue (its default in a batch job), SIGUSR1 stays Lightning's:
it saves ``hpc_ckpt_<n>.ckpt`` into the run directory and runs ``scontrol requeue``; the SIGTERM
with which SLURM then stops the job takes the path above, and the requeued job continues the run
(:func:`pipeline.resume.find_resume`).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pipeline.errors import Interrupted


class CheckpointOnSignal(L.Callback):
    """Save ``checkpoint`` when SIGTERM or SIGUSR1 stops training; :attr:`received` names the signal."""

    def __init__(self, checkpoint: str | Path) -> None:
        self.checkpoint = Path(checkpoint)
        self.received: str | None = None
        self.saved_step: int | None = None
        self._previous_usr1: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registers its handlers after on_fit_start; here, SIGUSR1 still at its default
        # means no SLURM requeue handler (and none of the user's) wants it.
        if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
            handler = signal.getsignal(signal.SIGUSR1)
            if handler in (signal.SIG_DFL, None):
                self._previous_usr1 = handler
                signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_usr1(self, signum: int, frame: FrameType | None) -> None:
        self.received = "SIGUSR1"
        signal.raise_signal(signal.SIGTERM)  # Lightning's handler: stop every rank at the end of this step

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.received = self.received or "SIGTERM"
            trainer.save_checkpoint(self.checkpoint, weights_only=False)  # a full checkpoint: optimizer, loops, callbacks
            self.saved_step = trainer.global_step

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None

    def interrupted(self) -> Interrupted | None:
        """What to report once fit has ended, if a signal stopped it."""
        if self.received is None or self.saved_step is None:
            return None
        return Interrupted(self.received, self.saved_step, self.checkpoint)
