"""Which way is better for each metric: what W&B's run summary and ``pipeline.compare`` rank by.

One table for every metric name the stages log: the minimum of a loss or a distance, the maximum
of an accuracy, PSNR, SSIM, SI-SDR or codebook usage, and always the last value. A name that
matches neither (a learning rate, a ratio to a reference) keeps only its last value.
"""

from __future__ import annotations

import re

# (pattern on the metric's last path segment, summary): the first that matches wins; others keep only "last".
GOALS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(^|_)(accuracy|psnr|ssim|si_sdr|codebook_usage|perplexity)$"), "max,last"),
    (re.compile(r"(^|_)(loss|l1|mse|fid|fd_classifier|bits_per_byte)$"), "min,last"),
)


def metric_summary(name: str) -> str:
    """``"max,last"``, ``"min,last"`` or ``"last"`` for the metric ``name`` (``val/psnr``, ``train/rec_loss``, ...)."""
    leaf = name.rsplit("/", 1)[-1]
    return next((summary for pattern, summary in GOALS if pattern.search(leaf)), "last")
