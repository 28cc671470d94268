"""The T-step DDPM that generates HI-Diff's compact prior z (B, N tokens, C').

Both official implementations (docs/architecture.md 1.5) are one class with named options:

* ``hidiff_local`` (GoPro, ``apply_ldm: false``): true linear betas, the denoiser
  predicts epsilon, x0 is clamped to [-1, 1] every step, the denoiser sees the
  time as a tensor of x's shape filled with i+1, and the forward (training)
  noising uses alpha_bar_T where sqrt(alpha_bar_T) belongs (docs/quirks.md, quirk 10).
* ``ldm`` (RealBlur, ``apply_ldm: true``): sqrt-linear betas, the denoiser
  predicts x0, no clamp, the time is a (B, N) tensor filled with the index i.

Sampling is the deterministic posterior-mean chain on all T steps (docs/quirks.md, quirk 12);
the only randomness is the explicit initial noise x_T, which callers pass in.
Schedule arithmetic always runs in float32, also under autocast.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict

import numpy as np
import torch
from torch import Tensor, nn

from hidiff.diffusion.schedules import make_beta_schedule
from hidiff.errors import ConfigError
from hidiff.utils.suggest import did_you_mean

PARAMETERIZATIONS = ("eps", "x0")
TIME_ENCODINGS = ("plus_one_full", "index_tokens")


@dataclass(frozen=True)
class DiffusionSettings:
    """Every knob of the latent DDPM; presets below give the official combinations."""

    timesteps: int = 8
    schedule: str = "linear"
    linear_start: float = 0.1
    linear_end: float = 0.99
    parameterization: str = "eps"
    clip_denoised: bool = True
    time_encoding: str = "plus_one_full"
    # docs/quirks.md, quirk 10: the local path noises with alpha_bar_T instead of sqrt(alpha_bar_T).
    q_sample_uses_alpha_bar: bool = True


DIFFUSION_PRESETS: Dict[str, DiffusionSettings] = {
    "hidiff_local": DiffusionSettings(),
    "ldm": DiffusionSettings(timesteps=16, schedule="sqrt_linear", parameterization="x0",
                             clip_denoised=False, time_encoding="index_tokens",
                             q_sample_uses_alpha_bar=False),
}


class LatentDDPM(nn.Module):
    """Schedule buffers plus q_sample / step / sample for the prior chain.

    Holds no learned parameters and nothing persistent in its state_dict, so
    checkpoints keep exactly the official networks' keys.
    """

    def __init__(self, settings: DiffusionSettings = DiffusionSettings()) -> None:
        super().__init__()
        if settings.parameterization not in PARAMETERIZATIONS:
            raise ConfigError(f"diffusion.parameterization must be one of {PARAMETERIZATIONS}, "
                              f"got '{settings.parameterization}'")
        if settings.time_encoding not in TIME_ENCODINGS:
            raise ConfigError(f"diffusion.time_encoding must be one of {TIME_ENCODINGS}, "
                              f"got '{settings.time_encoding}'")
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
        """The time tensor the official denoisers expect at step index i."""
        if self.settings.time_encoding == "plus_one_full":
            return torch.full(x.shape, float(i + 1), device=x.device, dtype=torch.float32)
        return torch.full(x.shape[:2], float(i), device=x.device, dtype=torch.float32)

    def predict_x0(self, model_out: Tensor, x: Tensor, i: int) -> Tensor:
        if self.settings.parameterization == "x0":
            x0 = model_out
        else:
            x0 = self.sqrt_recip_alphas_cumprod[i] * x - self.sqrt_recipm1_alphas_cumprod[i] * model_out
        if self.settings.clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        return x0

    def step(self, denoiser: Callable[[Tensor, Tensor, Tensor], Tensor], x: Tensor, cond: Tensor, i: int) -> Tensor:
        """One reverse step i -> i-1: the posterior mean, no noise added."""
        out = denoiser(x, cond, self.time_input(x, i)).float()
        x0 = self.predict_x0(out, x, i)
        return self.posterior_mean_coef1[i] * x0 + self.posterior_mean_coef2[i] * x

    def sample(self, denoiser: Callable[[Tensor, Tensor, Tensor], Tensor], cond: Tensor, x_T: Tensor) -> Tensor:
        """Run the full unrolled chain from an explicit x_T; differentiable end to end."""
        if x_T.shape != cond.shape:
            raise ValueError(f"x_T shape {tuple(x_T.shape)} must equal the condition shape {tuple(cond.shape)}")
        x = x_T.float()
        for i in reversed(range(self.timesteps)):
            x = self.step(denoiser, x, cond, i)
        return x

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
