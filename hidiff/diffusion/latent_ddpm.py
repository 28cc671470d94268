"""The latent DDPM of HI-Diff's compact prior z (B, N tokens, C'): its schedule table and forward noising.

The settings and the official presets are in :mod:`hidiff.diffusion.settings`, the reverse chain
(the sampler) in :mod:`hidiff.diffusion.sampler`; this model holds the numbers both use.
Schedule arithmetic always runs in float32, also under autocast.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from hidiff.diffusion import sampler
from hidiff.diffusion.schedules import make_beta_schedule
from hidiff.diffusion.settings import DIFFUSION_PRESETS, DiffusionSettings
from hidiff.errors import ConfigError
from hidiff.utils.suggest import did_you_mean


class LatentDDPM(nn.Module):
    """Schedule buffers plus q_sample / step / sample for the prior chain.

    Holds no learned parameters and nothing persistent in its state_dict, so
    checkpoints keep exactly the official networks' keys.
    """

    def __init__(self, settings: DiffusionSettings = DiffusionSettings()) -> None:
        super().__init__()
        settings.check()
        self.settings = settings
        betas = make_beta_schedule(settings.schedule, settings.timesteps,
                                   settings.linear_start, settings.linear_end)
        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        abar_prev = np.append(1.0, abar[:-1])
        table = {
            "betas": betas,
            "alphas_cumprod": abar,
            "sqrt_alphas_cumprod": np.sqrt(abar),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1.0),
            "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
        }
        for name, value in table.items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32), persistent=False)

    @property
    def timesteps(self) -> int:
        return self.settings.timesteps

    def q_sample(self, z0: Tensor, noise: Tensor) -> Tensor:
        """Noise the clean prior to the last step T (training starts the chain here)."""
        t = self.timesteps - 1
        if self.settings.q_sample_uses_alpha_bar:
            a = self.alphas_cumprod[t]
            b = torch.sqrt(1.0 - self.alphas_cumprod[t] ** 2)
        else:
            a = self.sqrt_alphas_cumprod[t]
            b = self.sqrt_one_minus_alphas_cumprod[t]
        return a * z0.float() + b * noise.float()

    def time_input(self, x: Tensor, i: int) -> Tensor:
        """The time tensor the official denoisers expect at step index i (:func:`sampler.time_input`)."""
        return sampler.time_input(self, x, i)

    def predict_x0(self, model_out: Tensor, x: Tensor, i: int) -> Tensor:
        """:func:`sampler.predict_x0`."""
        return sampler.predict_x0(self, model_out, x, i)

    def step(self, denoiser: Callable[[Tensor, Tensor, Tensor], Tensor], x: Tensor, cond: Tensor, i: int) -> Tensor:
        """One reverse step i -> i-1 (:func:`sampler.reverse_step`)."""
        return sampler.reverse_step(self, denoiser, x, cond, i)

    def sample(self, denoiser: Callable[[Tensor, Tensor, Tensor], Tensor], cond: Tensor, x_T: Tensor) -> Tensor:
        """The full unrolled chain from an explicit x_T (:func:`sampler.sample`); differentiable end to end."""
        return sampler.sample(self, denoiser, cond, x_T)

    def extra_repr(self) -> str:
        s = self.settings
        return (f"T={s.timesteps}, schedule={s.schedule}({s.linear_start}->{s.linear_end}), "
                f"predicts={s.parameterization}, clip={s.clip_denoised}")


def build_diffusion(preset: str = "hidiff_local", **overrides) -> LatentDDPM:
    """Build a LatentDDPM from a named preset plus explicit overrides."""
    if preset not in DIFFUSION_PRESETS:
        raise ConfigError(f"diffusion.implementation: unknown '{preset}'; expected one of "
                          f"{', '.join(DIFFUSION_PRESETS)}")
    known = DiffusionSettings.__dataclass_fields__
    for key in overrides:
        if key not in known:
            raise ConfigError(f"diffusion.{key}: unknown option{did_you_mean(key, known)}")
    clean = {k: v for k, v in overrides.items() if v is not None}
    return LatentDDPM(replace(DIFFUSION_PRESETS[preset], **clean))
