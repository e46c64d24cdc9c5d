"""The W&B sweep definitions in `sweeps/`: every parameter value is a valid override of the real config."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import REPO, compose_config

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def _values(spec: dict) -> list:
    return list(spec["values"]) if "values" in spec else [spec["min"], spec["max"]]


def test_there_are_sweeps_for_the_common_comparisons() -> None:
    assert {p.stem for p in SWEEPS} >= {"dit_size_objective", "guidance_sampler", "tokenizer_size"}


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_a_sweep_runs_the_cli_with_hydra_overrides_that_compose(path: Path) -> None:
    sweep = yaml.safe_load(path.read_text())
    command = sweep["command"]
    assert command[:4] == ["${env}", "python", "-m", "pipeline"] and command[-1] == "${args_no_hyphens}"
    fixed = [arg for arg in command[4:-1] if "=" in arg]
    assert any(arg.startswith("experiment_name=") for arg in fixed)  # the sweep's runs share one W&B group
    assert sweep["metric"]["goal"] in ("minimize", "maximize") and "/" in sweep["metric"]["name"]
    names = list(sweep["parameters"])
    for combination in itertools.product(*(_values(sweep["parameters"][name]) for name in names)):
        overrides = [f"{name}={value}" for name, value in zip(names, combination)]
        cfg = compose_config(*fixed, *overrides)
        assert cfg.group == next(arg.split("=", 1)[1] for arg in fixed if arg.startswith("experiment_name="))
        for name, value in zip(names, combination):
            if "." in name:
                assert OmegaConf.select(cfg, name) == value, name
            else:  # a config group: its choice shows in the composed node
                assert value in (cfg[name].get("preset"), cfg[name].get("size"), cfg[name].get("name")) or cfg[name]._target_.lower().endswith(value), name
