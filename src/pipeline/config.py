"""Where the configs live, the resolvers they use, and turning a config into plain data."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

RUN_NAME_ENV = "PIPELINE_RUN_NAME"
# A key whose last segment looks like a credential (``api_key``, ``hf_token``, ``password``) is masked.
SECRET_KEY = re.compile(r"(^|_)(api_?key|token|secret|password)$", re.IGNORECASE)


def config_dir() -> Path:
    """The top-level ``conf/`` of a source checkout, else the copy an installed wheel ships as ``pipeline/conf``."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parents[1] / "conf", package / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no Hydra configs found beside {package}: reinstall the package")


def launch_stamp(mode: Any = None, job_num: Any = None, parent: Any = None) -> str:
    """A timestamp fixed once per launch and shared by every process it starts.

    The first process to resolve it stores it in the environment; processes that a launcher
    (Lightning's DDP) starts later inherit it, so all ranks agree on one run directory. Ranks that
    an outside launcher started side by side (torchrun, SLURM's srun) cannot inherit it: they
    share the launcher's id instead (``torchrun-<run id>``, ``slurm-<job id>``), unless
    ``run_name=`` is given. Under ``--multirun`` the job number is appended, so sweep jobs never
    share a directory.

    ``parent``: the folder the run directory goes in. A single run's new stamp claims its directory
    there at once (``mkdir``, which only one process can win), so two launches started within the
    same second get ``<stamp>`` and ``<stamp>-2`` rather than one directory they both write to.
    """
    stamp = os.environ.get(RUN_NAME_ENV) or _outside_launcher_id()
    if not stamp:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        if parent is not None and not _is_multirun(mode):
            stamp = _claim(Path(str(parent)), stamp)
    os.environ[RUN_NAME_ENV] = stamp
    return f"{stamp}_{job_num}" if _is_multirun(mode) else stamp


def _is_multirun(mode: Any) -> bool:
    return str(mode) in ("RunMode.MULTIRUN", "MULTIRUN")


def _claim(parent: Path, stamp: str) -> str:
    """The first of ``stamp``, ``stamp-2``, ``stamp-3``, ... whose directory under ``parent`` this process created."""
    parent.mkdir(parents=True, exist_ok=True)
    name, attempt = stamp, 1
    while True:
        try:
            (parent / name).mkdir()
            return name
        except FileExistsError:
            attempt += 1
            name = f"{stamp}-{attempt}"


def _outside_launcher_id() -> str | None:
    """The id every rank of a torchrun or multi-task SLURM launch shares, or None outside one."""
    if "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}"
    if "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    return None


def run_group(experiment_name: Any, data_name: Any) -> str:
    """The W&B group: the experiment's name, else under ``--multirun`` one group per sweep
    (``<data>-sweep-<launch stamp>``), else the data's name."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if experiment_name:
        return str(experiment_name)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{data_name}-sweep-{launch_stamp()}"
    return str(data_name)


def register_resolvers() -> None:
    for name, resolver in (("launch_stamp", launch_stamp), ("run_group", run_group)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{"data.name": "mnist", ...}`` with secret-looking values masked."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif SECRET_KEY.search(prefix.rsplit(".", 1)[-1]):
            out[prefix] = "***"
        else:
            out[prefix] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out
