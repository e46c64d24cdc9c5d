"""End-to-end quality per modality, from the newest finished ``make demo MODALITY=...`` runs under ``outputs/``.

The demos take 25 to 60 minutes each on 2 CPU cores, too long to start from ``make bench``; this
benchmark gathers what the last ones measured: the evaluation scores (``eval.json``) with the
tokenizer's and the DiT's final validation metrics, their training steps and seconds, and which
run each figure came from. A modality whose demo has not run is reported as such, with the
command that makes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.run import REPO

DEMOS = {"image": "mnist", "audio": "spoken_digits", "text": "fortunes"}
HEADLINE = ("eval/cond_accuracy", "eval/fd_classifier", "eval/fid", "eval/bits_per_byte_ratio", "eval/classifier_recon_accuracy")


def _record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def demo_result(outputs: Path, data: str) -> dict[str, Any] | None:
    """The newest finished eval of ``data`` and the DiT and tokenizer behind it, or None."""
    evaluation = _record(outputs / data / "eval" / "latest" / "run.json")
    if not evaluation or evaluation.get("status") != "finished":
        return None
    scores = _record(Path(evaluation["eval"])) or {}
    dit_run = _record(Path(evaluation["dit"]).parent / "run.json") or {}
    tokenizer_path = dit_run.get("tokenizer")
    tokenizer_run = (_record(Path(tokenizer_path).parent / "run.json") or {}) if tokenizer_path else {}
    return {
        "eval_run": str(outputs / data / "eval" / "latest"), "scores": scores,
        "dit": {"run": dit_run.get("run_name"), "step": dit_run.get("step"), "metrics": dit_run.get("metrics"), "stats": dit_run.get("stats")},
        "tokenizer": {"run": tokenizer_run.get("run_name"), "step": tokenizer_run.get("step"), "metrics": tokenizer_run.get("metrics"),
                      "stats": tokenizer_run.get("stats")},
    }


def main(out_dir: Path) -> dict[str, Any]:
    outputs = REPO / "outputs"
    results, summary = {}, {}
    for modality, data in DEMOS.items():
        result = demo_result(outputs, data)
        results[modality] = result
        if result is None:
            summary[f"{modality} ({data})"] = f"no finished demo: make demo MODALITY={modality}"
            continue
        for key in HEADLINE:
            value = result["scores"].get(key)
            if isinstance(value, (int, float)):
                summary[f"{modality} ({data}): {key}"] = value
        summary[f"{modality} ({data}): sampling s/example"] = result["scores"].get("sampling_seconds_per_example")
    return {"config": {"outputs": str(outputs), "demos": DEMOS}, "results": results, "summary": summary}
