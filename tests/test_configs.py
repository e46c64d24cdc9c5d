"""Every config option composes and instantiates; override order does what the README says."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import compose_config
from pipeline.config import config_dir, launch_stamp
from pipeline.data import DataModule
from pipeline.diffusion import PRESETS
from pipeline.errors import UserError
from pipeline.checks import check_config
from pipeline.stages.common import tokenizer_latent_shape
from pipeline.tokenizer import VQVAE

DATA_OPTIONS = sorted(p.stem for p in (config_dir() / "data").glob("*.yaml"))
VQVAE_OPTIONS = sorted(p.stem for p in (config_dir() / "vqvae").glob("*.yaml"))
MODALITY_OPTIONS = sorted(p.stem for p in (config_dir() / "modality").glob("*.yaml"))
DATA_MODALITY = {"mnist": "image", "fashion_mnist": "image", "cifar10": "image", "folder": "image", "synthetic_image": "image",
                 "spoken_digits": "audio", "synthetic_audio": "audio",
                 "tinystories": "text", "fortunes": "text", "text_file": "text", "synthetic_text": "text", "paired": "image",
                 "paired_table": "image"}
NEEDS_PATH = {"folder", "text_file"}
STAGE_ONE_DATA = [data for data in DATA_OPTIONS if not data.startswith("paired")]  # paired data is for the DiT only (tests/test_paired*.py)


def test_options_found() -> None:
    assert set(DATA_MODALITY) == set(DATA_OPTIONS)
    assert VQVAE_OPTIONS == ["base", "large", "small"]
    assert MODALITY_OPTIONS == ["audio", "image", "text"]
    networks = {p.stem for p in (config_dir() / "vqvae" / "net").glob("*.yaml")}
    assert networks == {f"{m}_{v}" for m in MODALITY_OPTIONS for v in VQVAE_OPTIONS}  # every modality x size


@pytest.mark.parametrize("vqvae", VQVAE_OPTIONS)
@pytest.mark.parametrize("data", STAGE_ONE_DATA)
def test_every_data_and_vqvae_option_instantiates(data: str, vqvae: str, tmp_path: Path) -> None:
    """data x size, the modality following the data: the data module, the tokenizer, and a dry run whose latents come back at the example's size."""
    extra = [f"data.path={tmp_path}"] if data in NEEDS_PATH else []
    cfg = compose_config(f"data={data}", f"vqvae={vqvae}", *extra, root=tmp_path)
    assert cfg.stage.name == "vqvae" and cfg.data.name == data
    assert cfg.modality.name == cfg.data.modality == DATA_MODALITY[data]  # the data option chose the modality
    check_config(cfg)
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, DataModule) and datamodule.modality == cfg.modality.name
    model = instantiate(cfg.vqvae)
    assert isinstance(model, VQVAE) and model.hparams.size == vqvae
    latent_shape = tokenizer_latent_shape(cfg, model)
    example = list(cfg.modality.example_shape)
    factor = model.encoder.downsample_factor
    assert latent_shape[0] == cfg.vqvae.encoder.latent_dim
    assert latent_shape[1:] == [size // factor for size in example[-model.encoder.spatial_ndim:]]


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_a_contradictory_modality_is_refused(modality: str, tmp_path: Path) -> None:
    """A command-line modality= silently beats the data option's choice in Hydra: the application refuses the mix."""
    data = {"image": "spoken_digits", "audio": "fortunes", "text": "mnist"}[modality]
    cfg = compose_config(f"data={data}", f"modality={modality}", root=tmp_path)
    assert cfg.modality.name == modality != cfg.data.modality
    with pytest.raises(UserError, match=f"data={data} is {cfg.data.modality} data but modality={modality}"):
        check_config(cfg)


def test_a_size_the_tokenizer_cannot_take_is_refused(tmp_path: Path) -> None:
    for overrides, message in (
        (["data=synthetic_image", "data.size=30"], r"examples of length \[30, 30\] come back from the tokenizer as \[28, 28\]"),
        (["data=synthetic_audio", "data.clip_length=1000"], r"examples of length \[1000\] come back .* downsampling x16"),
        (["data=synthetic_text", "data.seq_length=127"], r"examples of length \[127\] come back .* downsampling x2"),
    ):
        cfg = compose_config(*overrides, root=tmp_path)
        with pytest.raises(UserError, match=message):
            tokenizer_latent_shape(cfg, instantiate(cfg.vqvae))


def test_keys_later_issues_rely_on(tmp_path: Path) -> None:
    cfg = compose_config(root=tmp_path)
    for key in ("max_steps", "precision", "devices", "accelerator", "num_nodes"):
        assert key in cfg.trainer
    assert cfg.resume is False and isinstance(cfg.seed, int)
    assert cfg.group == cfg.data.name == "mnist"
    assert cfg.paths.run_dir == f"{tmp_path}/outputs/mnist/vqvae/test"
    assert cfg.trainer.precision == "32-true"  # fp32 on CPU by default


def test_experiment_sets_group_and_debug_wins(tmp_path: Path) -> None:
    cfg = compose_config("experiment=fashion_tokenizer", root=tmp_path)
    assert cfg.data.name == "fashion_mnist" and cfg.group == "fashion_tokenizer"
    fast = compose_config("experiment=fashion_tokenizer", "debug=fast", root=tmp_path)
    assert fast.trainer.max_steps == 20  # debug beats the stage's own step budget
    explicit = compose_config("debug=fast", "trainer.max_steps=7", root=tmp_path)
    assert explicit.trainer.max_steps == 7  # the command line beats every config file


def test_wandb_mode_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert compose_config(root=tmp_path).logger.mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert compose_config(root=tmp_path).logger.mode == "online"
    monkeypatch.delenv("WANDB_MODE")
    assert compose_config("logger.mode=online", root=tmp_path).logger.mode == "online"


def test_launch_stamp_fixed_per_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_RUN_NAME", raising=False)
    first = launch_stamp("RunMode.RUN", 0)
    assert launch_stamp("RunMode.RUN", 0) == first  # later processes of the same launch agree
    assert launch_stamp("RunMode.MULTIRUN", 3) == f"{first}_3"  # sweep jobs get their own directory


def test_launches_in_the_same_second_get_their_own_run_directories(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(time, "strftime", lambda fmt: "2026-12-01_14-41-11")
    parent = tmp_path / "outputs" / "fortunes" / "dit"
    names = []
    for _ in range(3):
        monkeypatch.delenv("PIPELINE_RUN_NAME", raising=False)  # a new launch, in the same second
        names.append(launch_stamp("RunMode.RUN", None, parent))
    assert names == ["2026-12-01_14-41-11", "2026-12-01_14-41-11-2", "2026-12-01_14-41-11-3"]
    assert sorted(path.name for path in parent.iterdir()) == names  # each claimed by its launch
    assert launch_stamp("RunMode.RUN", None, parent) == names[-1]  # the launch's later processes claim nothing
    monkeypatch.delenv("PIPELINE_RUN_NAME")
    assert launch_stamp("RunMode.MULTIRUN", 0, parent) == "2026-12-01_14-41-11_0"  # sweep jobs are numbered instead
    assert len(list(parent.iterdir())) == 3


def test_flat_config_masks_secrets_only(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from pipeline.config import flat_config

    cfg = compose_config(root=tmp_path)
    OmegaConf.set_struct(cfg, False)
    cfg.logger.api_key = "abc123"
    cfg.hf_token = "hf_secret"
    flat = flat_config(cfg)
    assert flat["logger.api_key"] == "***" and flat["hf_token"] == "***"
    assert "abc123" not in str(flat) and "hf_secret" not in str(flat)
    assert flat["tokenizer_ckpt"] is None and flat["data.name"] == "mnist"


@pytest.mark.parametrize("stage", ["dit", "ar", "sample", "eval"])
def test_stage_two_configs_compose_and_resolve(stage: str) -> None:
    cfg = compose_config(f"stage={stage}")
    assert cfg.stage.name == stage
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["sample"]["steps"] == 25 and resolved["objective"]["_target_"] == "pipeline.diffusion.RectifiedFlow"


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_dit_preset_instantiates_with_the_paper_sizes(preset: str) -> None:
    cfg = compose_config("stage=dit", f"dit={preset}")
    with torch.device("meta"):
        model = instantiate(cfg.dit, input_size=[7, 7], in_channels=16, num_classes=10)
    assert (len(model.blocks), model.config["hidden_size"], model.config["num_heads"]) == PRESETS[preset]
    assert model.config["preset"] == preset and model.patch_size == 2


@pytest.mark.parametrize("objective, name", [("flow", "flow"), ("ddpm", "ddpm")])
def test_objectives_and_the_training_module_instantiate(objective: str, name: str) -> None:
    cfg = compose_config("stage=dit", f"objective={objective}", "dit.depth=1")
    model = instantiate(cfg.dit, input_size=[7, 7], in_channels=16, num_classes=10)
    module = instantiate(cfg.diffusion, model=model, objective=instantiate(cfg.objective), latent_mean=torch.zeros(16), latent_std=torch.ones(16))
    assert module.objective.name == name and module.hparams.ema_decay == cfg.diffusion.ema_decay
    assert isinstance(module.optimizer_factory(params=model.parameters()), torch.optim.AdamW)


def test_the_modality_sets_the_flow_time_and_grid_shifts_and_the_command_line_wins(tmp_path: Path) -> None:
    objectives = {data: instantiate(compose_config("stage=dit", f"data={data}", root=tmp_path).objective)
                  for data in ("mnist", "spoken_digits", "fortunes")}
    shifts = {data: (objective.time_shift, objective.grid_shift) for data, objective in objectives.items()}
    assert shifts == {"mnist": (1.0, 1.0), "spoken_digits": (1.0, 1.0), "fortunes": (4.0, 0.1)}  # text trains at high noise, samples at low
    cfg = compose_config("stage=dit", "data=fortunes", "objective.time_shift=1.5", "objective.grid_shift=null", root=tmp_path)
    assert (instantiate(cfg.objective).time_shift, instantiate(cfg.objective).grid_shift) == (1.5, 1.5)


def test_the_modality_sets_restart_sampling_and_the_command_line_wins(tmp_path: Path) -> None:
    rounds = {data: (lambda restart: (restart.count, restart.steps, restart.temperature))(compose_config("stage=eval", f"data={data}", root=tmp_path).sample.restart)
              for data in ("mnist", "spoken_digits", "fortunes")}
    assert rounds == {"mnist": (0, 3, 1.0), "spoken_digits": (0, 3, 1.0), "fortunes": (96, 2, 1.15)}  # text revises its codes in 96 rounds of 2 steps (README)
    assert compose_config("stage=eval", "data=fortunes", "sample.restart.count=0", root=tmp_path).sample.restart.count == 0


def test_the_modality_sets_the_dit_blocks_and_the_command_line_wins(tmp_path: Path) -> None:
    blocks = {data: (lambda dit: (dit.norm, dit.mlp))(compose_config("stage=dit", f"data={data}", root=tmp_path).dit) for data in ("mnist", "spoken_digits", "fortunes")}
    assert blocks == {"mnist": ("layernorm", "gelu"), "spoken_digits": ("layernorm", "gelu"), "fortunes": ("rmsnorm", "swiglu")}  # text: LightningDiT's (README)
    cfg = compose_config("stage=dit", "data=fortunes", "dit=S", "dit.norm=layernorm", root=tmp_path)
    with torch.device("meta"):
        model = instantiate(cfg.dit, input_size=[64], in_channels=8, num_classes=0)
    assert (model.config["norm"], model.config["mlp"]) == ("layernorm", "swiglu")


def _max_steps(group: str, option: str) -> int:
    """``trainer.max_steps`` as written in ``conf/<group>/<option>.yaml``."""
    return OmegaConf.load(config_dir() / group / f"{option}.yaml").trainer.max_steps


def test_a_stage_tuned_for_one_data_set_and_debug_still_wins(tmp_path: Path) -> None:
    for stage in ("dit", "vqvae"):
        tuned = _max_steps("stage_data", f"{stage}_spoken_digits")
        assert tuned != _max_steps("stage", stage)  # else the test shows nothing
        assert compose_config(f"stage={stage}", "data=spoken_digits", root=tmp_path).trainer.max_steps == tuned
    assert compose_config("stage=dit", "data=mnist", root=tmp_path).trainer.max_steps == 1500  # no specialisation: the stage's budget
    assert compose_config("stage=dit", "data=fortunes", "debug=fast", root=tmp_path).trainer.max_steps == 20
    assert compose_config("stage=vqvae", "data=fortunes", root=tmp_path).trainer.max_steps == _max_steps("stage_data", "vqvae_fortunes") == 2000
    for condition in ("text", "audio"):  # conf/stage_data/dit_paired.yaml: the data option, not its name (paired_<condition>)
        assert compose_config("stage=dit", "data=paired", f"condition={condition}", root=tmp_path).trainer.max_steps == 800


def test_an_experiment_picks_the_networks_of_its_data_modality(tmp_path: Path) -> None:
    cfg = compose_config("experiment=mnist_tokenizer", "modality=image", root=tmp_path)
    assert cfg.vqvae.encoder._target_ == "pipeline.tokenizer.ImageEncoder" and cfg.data.name == "mnist"
    audio = compose_config("data=spoken_digits", "vqvae=base", root=tmp_path)
    assert audio.vqvae.encoder._target_ == "pipeline.tokenizer.AudioEncoder" and audio.vqvae.encoder.channels == [32, 64, 128, 256]
