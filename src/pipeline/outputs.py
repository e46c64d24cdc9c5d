"""Where runs land and where a stage finds what earlier stages made (``outputs/<data>/<stage>/latest``).

Torch-free, so :mod:`pipeline.checks` can refuse a missing input before torch is imported.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import UserError


def stage_dir(cfg: DictConfig, stage: str, data_name: str | None = None) -> Path:
    """``outputs/<data>/<stage>``: where runs of ``stage`` for this data (or ``data_name``) land."""
    return Path(cfg.paths.output_dir).resolve() / (data_name or cfg.data.name) / stage


def image_data_name(cfg: DictConfig) -> str:
    """The data set whose examples stage two generates: the data's own name, or for paired data its image data's
    (whose tokenizer, latent cache and reference classifier are shared with runs on that data alone)."""
    return str(OmegaConf.select(cfg, "data.image.name") or cfg.data.name)


def data_args(cfg: DictConfig, data_name: str) -> str:
    """The ``data=`` arguments that train on ``data_name`` alone: its config option, or for the images of a paired
    table (which have none of their own) ``data=mnist`` pointed at the table's image column."""
    image, table = OmegaConf.select(cfg, "data.image"), OmegaConf.select(cfg, "data.table")
    if table and image is not None and data_name == image.name:
        return (f"data=mnist data.name={image.name} data.hub_id={table} data.offline=null data.image_column={image.image_column} "
                f"data.label_column={image.label_column} data.size={image.size} data.channels={image.channels}")
    return f"data={data_name}"


def latest_output(cfg: DictConfig, stage: str, filename: str, override_key: str, data_name: str | None = None) -> Path:
    """``cfg[override_key]`` if set, else ``filename`` in the newest finished ``stage`` run of this data (or ``data_name``).

    Missing: one line with the exact command that makes it.
    """
    explicit = OmegaConf.select(cfg, override_key)
    if explicit:
        path = Path(str(explicit)).expanduser()
        path = path / filename if path.is_dir() else path
        if not path.is_file():
            raise UserError(f"{override_key}={explicit}: no file at {path}")
        return path.resolve()
    data_name = data_name or cfg.data.name
    path = stage_dir(cfg, stage, data_name) / "latest" / filename
    if not path.is_file():
        raise UserError(
            f"no finished {stage} run for data={data_name} (looked for {path}); "
            f"run first: python -m pipeline stage={stage} {data_args(cfg, data_name)} (or pass {override_key}=PATH)"
        )
    return path.resolve()
