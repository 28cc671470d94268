"""The reverse chain that generates the prior: T deterministic posterior-mean steps from x_T.

Sampling is the posterior mean without noise on all T steps (docs/quirks.md, quirk 12); the
only randomness is the explicit initial noise x_T, which callers pass in.  Training unrolls the
same chain, so the prior is differentiable end to end.  The schedule's numbers come from a
:class:`hidiff.diffusion.latent_ddpm.LatentDDPM`; they run in float32, also under autocast.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

if TYPE_CHECKING:  # the model imports this module; the sampler only reads its buffers and settings
    from hidiff.diffusion.latent_ddpm import LatentDDPM

Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]


def time_input(ddpm: "LatentDDPM", x: Tensor, i: int) -> Tensor:
    """The time tensor the official denoisers expect at step index i."""
    if ddpm.settings.time_encoding == "plus_one_full":
        return torch.full(x.shape, float(i + 1), device=x.device, dtype=torch.float32)
    return torch.full(x.shape[:2], float(i), device=x.device, dtype=torch.float32)


def predict_x0(ddpm: "LatentDDPM", model_out: Tensor, x: Tensor, i: int) -> Tensor:
    """The clean prior the denoiser's output implies at step i (clamped where the settings say)."""
    if ddpm.settings.parameterization == "x0":
        x0 = model_out
    else:
        x0 = ddpm.sqrt_recip_alphas_cumprod[i] * x - ddpm.sqrt_recipm1_alphas_cumprod[i] * model_out
    if ddpm.settings.clip_denoised:
        x0 = x0.clamp(-1.0, 1.0)
    return x0


def reverse_step(ddpm: "LatentDDPM", denoiser: Denoiser, x: Tensor, cond: Tensor, i: int) -> Tensor:
    """One reverse step i -> i-1: the posterior mean, no noise added."""
    out = denoiser(x, cond, time_input(ddpm, x, i)).float()
    x0 = predict_x0(ddpm, out, x, i)
    return ddpm.posterior_mean_coef1[i] * x0 + ddpm.posterior_mean_coef2[i] * x


def sample(ddpm: "LatentDDPM", denoiser: Denoiser, cond: Tensor, x_T: Tensor) -> Tensor:
    """Run the full unrolled chain T-1, ..., 0 from an explicit x_T (the shape of ``cond``)."""
    if x_T.shape != cond.shape:
        raise ValueError(f"x_T shape {tuple(x_T.shape)} must equal the condition shape {tuple(cond.shape)}")
    x = x_T.float()
    for i in reversed(range(ddpm.timesteps)):
        x = reverse_step(ddpm, denoiser, x, cond, i)
    return x
