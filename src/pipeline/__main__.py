"""The Hydra entry point: ``python -m pipeline stage=vqvae data=mnist``."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pipeline.config import config_dir, register_resolvers
from pipeline.detect import modality_override
from pipeline.errors import Diverged, Interrupted, UserError

CONFIG_DIR = config_dir()
USER_ERROR_EXIT = 2


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_EXIT)


def _config_error_line(err: Exception) -> str:
    """Hydra's composition errors are paragraphs; the user gets their first line plus the valid choices."""
    text = str(err).strip()
    missing = re.search(r"Could not find '([\w/]+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        folder = CONFIG_DIR / group
        choices = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        return f"unknown {group} option {option!r}; valid: {', '.join(choices)}"
    first = text.splitlines()[0] if text else type(err).__name__
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        first = f"{first} {str(cause).strip().splitlines()[0]}"
    return first


def check_launch(cfg: DictConfig) -> None:
    """Refuse what only the launch mode makes wrong: Lightning's ``ddp`` starts ranks by re-running
    ``sys.argv``, which under ``--multirun`` would run the whole sweep again in every rank."""
    if HydraConfig.get().mode == RunMode.MULTIRUN and cfg.strategy.name == "ddp":
        raise UserError("--multirun with strategy=ddp would run the whole sweep again in every rank Lightning starts: use strategy=ddp_spawn for sweeps")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    from pipeline.run import run

    try:
        check_launch(cfg)
        results = run(cfg)
    except UserError as err:
        _fail(str(err))
    except HydraException as err:
        if not isinstance(err.__cause__, UserError):  # a constructor's refusal, wrapped by instantiate: report it alone
            raise
        _fail(str(err.__cause__))
    except Diverged as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Interrupted as err:
        if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
            print(f"{err}; continue with: {resume_command(sys.argv, err.checkpoint.parents[1])}", file=sys.stderr, flush=True)
        sys.exit(err.exit_status)
    print_summary(results)


def resume_command(argv: list[str], run_dir: Path) -> str:
    """The command line that continues ``run_dir``: this one, with ``resume=`` pointing at it."""
    kept = [arg for arg in argv[1:] if not arg.startswith("resume=")]
    return " ".join(["python -m pipeline", *kept, f"resume={run_dir}"])


def print_summary(results: dict) -> None:
    """Where everything went, and the final metrics: the last thing a user reads."""
    print("\n== done ==")
    for key, value in results.items():
        if key != "metrics" and value is not None:
            print(f"{key:>20}: {value}")
    for key, value in results.get("metrics", {}).items():
        print(f"{key:>20}: {value:.4f}")
    wandb_run = results.get("wandb_run")
    if wandb_run is not None and "offline-run" in str(wandb_run):
        print(f"{'upload to W&B':>20}: wandb sync {wandb_run}")


def main() -> None:
    register_resolvers()
    detected = modality_override(sys.argv[1:])
    if detected:
        print(f"data=folder: {detected} detected from the files at data.path (pass modality= to choose another)", file=sys.stderr)
        sys.argv.append(detected)
    # Let composition errors reach us as exceptions instead of Hydra's paragraph + exit 1.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _hydra_main()
    except MissingConfigException as err:
        _fail(_config_error_line(err))
    except OverrideParseException as err:
        _fail(f"cannot parse override: {_config_error_line(err)}")
    except (ConfigCompositionException, OmegaConfBaseException, HydraException) as err:
        _fail(f"bad config: {_config_error_line(err)}")


if __name__ == "__main__":
    main()
