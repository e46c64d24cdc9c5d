"""Stage two: the diffusion transformer, its objectives and samplers, EMA and the latent cache."""

from pipeline.diffusion.dit import PRESETS, DiT
from pipeline.diffusion.generate import class_labels, decode_latents, generate, sample_latents
from pipeline.diffusion.io import LoadedDiT, load_dit, save_dit
from pipeline.diffusion.latents import LatentDataModule, LatentDataset, build_latent_cache, file_digest
from pipeline.diffusion.module import DiffusionModule
from pipeline.diffusion.objectives import DDPM, OBJECTIVES, Objective, RectifiedFlow, Restart, guided

__all__ = [
    "DDPM", "OBJECTIVES", "PRESETS", "DiT", "DiffusionModule", "LatentDataModule", "LatentDataset", "LoadedDiT", "Objective",
    "RectifiedFlow", "Restart", "build_latent_cache", "class_labels", "decode_latents", "file_digest", "generate", "guided", "load_dit",
    "sample_latents", "save_dit",
]
