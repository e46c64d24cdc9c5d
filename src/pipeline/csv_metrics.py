"""``metrics.csv`` that a resumed run continues instead of starting over.

Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts: it expects a fresh
version folder per run. A resumed run writes into its own run directory again, so here the rows
up to the step its checkpoint holds are kept, the rows a killed run logged after that checkpoint
are dropped (the resumed run logs those steps again), and new rows go below them under the same
header: one unbroken curve per run, as in W&B.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from pipeline.fileio import atomic_write


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self._resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self._resume_step is None or not path.is_file():
            super()._check_log_dir_exists()
            return
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            kept = [row for row in reader if int(float(row["step"])) < self._resume_step]
            header = list(reader.fieldnames or [])
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=header)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write(path, lambda out: out.write(text.getvalue().encode()))
        self.metrics_keys = header


class ContinuingCSVLogger(CSVLogger):
    """``CSVLogger(save_dir, name="", version="")`` writing ``<save_dir>/metrics.csv``; with ``resume_step``
    it keeps the rows logged before that step and appends to them."""

    def __init__(self, save_dir: str | Path, resume_step: int | None = None) -> None:
        super().__init__(save_dir=str(save_dir), name="", version="")
        self._resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, self._resume_step)
        return self._experiment
