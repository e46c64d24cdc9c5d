"""Errors a user can cause, a run stopped on a signal and a run that diverged. The entry point turns
each into one line on stderr: exit status 2 for a :class:`UserError`, the shell's status for the
signal for :class:`Interrupted`, 1 for :class:`Diverged`."""

import signal
from pathlib import Path


class UserError(Exception):
    """Bad input from the user (config, data, checkpoint): the message says what to type instead."""


class NoSpace(UserError):
    """A write the file system refused for room (a full disk, a quota, a file size limit); the file it
    would have replaced is untouched (:func:`pipeline.fileio.atomic_write`)."""

    def __init__(self, path: Path, err: OSError) -> None:
        super().__init__(
            f"cannot write {path}: {err.strerror} (no room on that file system); files written before are unchanged: "
            "free space, then run the same command again (a training run continues from its newest checkpoint with resume=true)"
        )


def one_line(err: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` (or just ``Type``), for one-line reports."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:limit]}" if text else type(err).__name__


class Interrupted(Exception):
    """A run stopped on a signal after saving its checkpoint (:mod:`pipeline.interrupts`)."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted by {signal_name} at step {step}: checkpoint {checkpoint}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint

    @property
    def exit_status(self) -> int:
        return 128 + int(getattr(signal, self.signal_name))


class Diverged(Exception):
    """Training produced non-finite gradients too many steps in a row (:mod:`pipeline.nonfinite`)."""

    def __init__(self, step: int, in_a_row: int, checkpoint: Path) -> None:
        super().__init__(
            f"training diverged: {in_a_row} steps in a row up to step {step} had non-finite gradients (none was applied); "
            f"the weights from before are in {checkpoint}: lower the learning rate or check the data, then resume from it"
        )
        self.step, self.checkpoint = step, checkpoint
