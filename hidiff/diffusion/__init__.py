"""Noise schedules, the latent DDPM's settings and model, and its sampler (pure tensor maths, no networks inside)."""
from hidiff.diffusion.schedules import make_beta_schedule
from hidiff.diffusion.settings import DIFFUSION_PRESETS, DiffusionSettings
from hidiff.diffusion.latent_ddpm import LatentDDPM, build_diffusion

__all__ = ["make_beta_schedule", "DiffusionSettings", "LatentDDPM", "DIFFUSION_PRESETS", "build_diffusion"]
