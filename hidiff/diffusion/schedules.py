"""Beta schedules.

The official HI-Diff code calls two different schedules "linear" (docs/quirks.md, quirk 9):
the local GoPro path uses a true linear ramp, the LDM path a ramp that is linear
in sqrt(beta).  Here they have distinct names: ``linear`` and ``sqrt_linear``.
"""
from __future__ import annotations

import numpy as np

from hidiff.errors import ConfigError

SCHEDULES = ("linear", "sqrt_linear", "cosine")


def make_beta_schedule(kind: str, timesteps: int, linear_start: float = 0.1,
                       linear_end: float = 0.99, cosine_s: float = 8e-3) -> np.ndarray:
    """Return the float64 betas of length ``timesteps``."""
    if timesteps < 1:
        raise ConfigError(f"diffusion.timesteps must be >= 1, got {timesteps}")
    if kind == "linear":
        betas = np.linspace(linear_start, linear_end, timesteps, dtype=np.float64)
    elif kind == "sqrt_linear":
        betas = np.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=np.float64) ** 2
    elif kind == "cosine":
        steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps + cosine_s
        f = np.cos(steps / (1 + cosine_s) * np.pi / 2) ** 2
        alphas_cumprod = f / f[0]
        betas = np.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)
    else:
        raise ConfigError(f"diffusion.schedule: unknown schedule '{kind}'; expected one of {', '.join(SCHEDULES)}")
    if not (np.all(betas > 0) and np.all(betas < 1)):
        raise ConfigError(f"diffusion betas must lie in (0, 1); got range [{betas.min()}, {betas.max()}]")
    return betas
