"""Every knob of the latent DDPM, and the two official combinations as named presets.

Both official implementations (docs/architecture.md 1.5) are one model with named options:

* ``hidiff_local`` (GoPro, ``apply_ldm: false``): true linear betas, the denoiser
  predicts epsilon, x0 is clamped to [-1, 1] every step, the denoiser sees the
  time as a tensor of x's shape filled with i+1, and the forward (training)
  noising uses alpha_bar_T where sqrt(alpha_bar_T) belongs (docs/quirks.md, quirk 10).
* ``ldm`` (RealBlur, ``apply_ldm: true``): sqrt-linear betas, the denoiser
  predicts x0, no clamp, the time is a (B, N) tensor filled with the index i.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from hidiff.errors import ConfigError

PARAMETERIZATIONS = ("eps", "x0")
TIME_ENCODINGS = ("plus_one_full", "index_tokens")


@dataclass(frozen=True)
class DiffusionSettings:
    """Every knob of the latent DDPM; the presets give the official combinations."""

    timesteps: int = 8
    schedule: str = "linear"
    linear_start: float = 0.1
    linear_end: float = 0.99
    parameterization: str = "eps"
    clip_denoised: bool = True
    time_encoding: str = "plus_one_full"
    # docs/quirks.md, quirk 10: the local path noises with alpha_bar_T instead of sqrt(alpha_bar_T).
    q_sample_uses_alpha_bar: bool = True

    def check(self) -> None:
        """Raise ConfigError for a parameterization or time encoding the sampler does not know."""
        if self.parameterization not in PARAMETERIZATIONS:
            raise ConfigError(f"diffusion.parameterization must be one of {PARAMETERIZATIONS}, "
                              f"got '{self.parameterization}'")
        if self.time_encoding not in TIME_ENCODINGS:
            raise ConfigError(f"diffusion.time_encoding must be one of {TIME_ENCODINGS}, "
                              f"got '{self.time_encoding}'")


DIFFUSION_PRESETS: Dict[str, DiffusionSettings] = {
    "hidiff_local": DiffusionSettings(),
    "ldm": DiffusionSettings(timesteps=16, schedule="sqrt_linear", parameterization="x0",
                             clip_denoised=False, time_encoding="index_tokens",
                             q_sample_uses_alpha_bar=False),
}
