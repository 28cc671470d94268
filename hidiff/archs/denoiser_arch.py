"""Prior-space denoisers of HI-Diff: (x_t, c, t) -> (B, N, C') with C' = 4*embed_dim.

Registered under the official names:
- ``denoising`` (GoPro, local diffusion): predicts the noise eps.  Input order
  [x, tau, c] with tau = t * time_mlp (a learned scalar, init 1e-3); t is the
  integer step i+1 in {1..T}, given as a tensor of x's shape or as (B, N).
- ``simple_denoise`` (RealBlur, LDM-style DDPM): predicts x0.  Input order
  [c, t/(10*timesteps), x] with t the step index i in {0..T-1} as a (B, N) tensor.
  ``timesteps`` is the official kwarg (default 5, never set in the shipped
  configs, hence the official divisor 50 even though T=16).
"""
from __future__ import annotations

from typing import Union

import torch
import torch.nn as nn

from hidiff.archs.mixer import MixerBlock
from hidiff.archs.sample_wise import SampleWiseLinear
from hidiff.errors import ConfigError
from hidiff.registry import ARCH_REGISTRY

TimeArg = Union[torch.Tensor, int, float]


def _check_pair(x: torch.Tensor, c: torch.Tensor, width: int, name: str) -> None:
    if x.dim() != 3 or x.shape[-1] != width:
        raise ValueError(f"{name}: x must be (B, N, {width}), got {tuple(x.shape)}")
    if c.shape != x.shape:
        raise ValueError(f"{name}: condition c must have x's shape {tuple(x.shape)}, got {tuple(c.shape)}")


def _positive(value, key: str, owner: str, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{owner}.{key}: expected an integer >= {minimum}, got {value!r}")


@ARCH_REGISTRY.register("denoising")
class MixerDenoiser(nn.Module):
    """Official ``denoising``: Linear+LReLU(0.2), (block_num-2) x [MixerBlock, GELU], Linear+GELU.

    ``in_channel`` is the prior width (4*embed_dim); the first layer sees 3*in_channel
    channels (x, tau, c).  Tokens = group**2.
    """

    def __init__(self, in_channel: int = 256, out_channel: int = 256, inner_channel: int = 512,
                 block_num: int = 4, group: int = 4, patch_expansion: float = 0.5,
                 channel_expansion: float = 2) -> None:
        super().__init__()
        for key, value, low in (("in_channel", in_channel, 1), ("out_channel", out_channel, 1),
                                ("inner_channel", inner_channel, 1), ("block_num", block_num, 2),
                                ("group", group, 1)):
            _positive(value, key, "denoising", low)
        self.in_channel = in_channel
        self.time_mlp = nn.Parameter(torch.full((1,), 1e-3))
        self.first_layer = nn.Sequential(SampleWiseLinear(in_channel * 3, inner_channel), nn.LeakyReLU(0.2))
        self.blocks = nn.Sequential(*[
            nn.Sequential(MixerBlock(group * group, inner_channel, patch_expansion, channel_expansion), nn.GELU())
            for _ in range(block_num - 2)])
        self.final_layer = nn.Sequential(SampleWiseLinear(inner_channel, out_channel), nn.GELU())

    def forward(self, x: torch.Tensor, c: torch.Tensor, t: TimeArg) -> torch.Tensor:
        """x, c: (B, N, in_channel); t: x-shaped or (B, N) tensor (or a scalar) of step numbers i+1."""
        _check_pair(x, c, self.in_channel, "denoising")
        t = torch.as_tensor(t, device=x.device).to(x.dtype)
        if t.dim() == 2:
            t = t.unsqueeze(-1)  # (B, N) -> repeated over channels
        try:
            tau = (t * self.time_mlp).expand_as(x)
        except RuntimeError:
            raise ValueError(f"denoising: t of shape {tuple(t.shape)} does not broadcast to x {tuple(x.shape)}") from None
        return self.final_layer(self.blocks(self.first_layer(torch.cat([x, tau, c], dim=-1))))


class _ResMLP(nn.Module):
    """Linear + LeakyReLU(0.1) under the official name ``resmlp``; NOT residual (docs/quirks.md, quirk 6)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.resmlp = nn.Sequential(SampleWiseLinear(width, width), nn.LeakyReLU(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resmlp(x)


@ARCH_REGISTRY.register("simple_denoise")
class SimpleDenoiser(nn.Module):
    """Official ``simple_denoise``: Linear(2*4n+1, 4n)+LReLU(0.1), then ``n_denoise_res`` x Linear+LReLU.

    The prior width is 4*n_feats (n_feats = embed_dim).  Time enters as one channel
    t / (10 * timesteps).
    """

    def __init__(self, n_feats: int = 64, n_denoise_res: int = 4, timesteps: int = 5) -> None:
        super().__init__()
        _positive(n_feats, "n_feats", "simple_denoise")
        _positive(n_denoise_res, "n_denoise_res", "simple_denoise", 0)
        _positive(timesteps, "timesteps", "simple_denoise")
        self.width = 4 * n_feats
        self.max_period = timesteps * 10
        self.resmlp = nn.Sequential(SampleWiseLinear(2 * self.width + 1, self.width), nn.LeakyReLU(0.1),
                                    *[_ResMLP(self.width) for _ in range(n_denoise_res)])

    def forward(self, x: torch.Tensor, c: torch.Tensor, t: TimeArg) -> torch.Tensor:
        """x, c: (B, N, 4*n_feats); t: (B, N) (or (B, N, 1), or a scalar) step indices i."""
        _check_pair(x, c, self.width, "simple_denoise")
        t = torch.as_tensor(t, device=x.device).to(x.dtype) / self.max_period
        if t.dim() == 2:
            t = t.unsqueeze(-1)
        try:
            t = t.expand(*x.shape[:-1], 1)
        except RuntimeError:
            raise ValueError(f"simple_denoise: t of shape {tuple(t.shape)} does not fit x {tuple(x.shape)}; "
                             "expected (B, N)") from None
        return self.resmlp(torch.cat([c, t, x], dim=-1))
