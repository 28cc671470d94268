"""Noise schedules and the latent-prior DDPM sampler (pure tensor maths, no networks inside)."""
from hidiff.diffusion.schedules import make_beta_schedule
from hidiff.diffusion.latent_ddpm import LatentDDPM, DIFFUSION_PRESETS, build_diffusion

__all__ = ["make_beta_schedule", "LatentDDPM", "DIFFUSION_PRESETS", "build_diffusion"]
