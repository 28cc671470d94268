"""Restormer's channel LayerNorm (Zamir et al. 2022): per pixel for maps, over the last axis for tokens.

Keys ``body.weight`` (and ``body.bias`` for ``'WithBias'``) follow the official
checkpoints.  Statistics are taken in fp32 for fp16/bf16 input, then cast back.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hidiff.errors import ConfigError
from hidiff.utils.suggest import did_you_mean

_REDUCED = (torch.float16, torch.bfloat16)
LN_EPS = 1e-5
LAYER_NORM_TYPES = ("WithBias", "BiasFree")


class _WithBiasNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased var)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in _REDUCED:
            y = F.layer_norm(x.float(), x.shape[-1:], self.weight.float(), self.bias.float(), LN_EPS)
            return y.to(x.dtype)
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, LN_EPS)


class _BiasFreeNorm(nn.Module):
    """x / sqrt(var + eps) * weight over the last axis: var is centred, x is not."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in _REDUCED else x
        var = xf.var(dim=-1, keepdim=True, unbiased=False)
        y = xf * torch.rsqrt(var + LN_EPS) * self.weight.to(xf.dtype)
        return y.to(x.dtype)


class LayerNorm(nn.Module):
    """Channel LayerNorm: per pixel for (B,C,H,W) maps, over the last axis for (B,N,C) tokens.

    ``LayerNorm_type`` is ``'WithBias'`` (all shipped configs) or ``'BiasFree'``.
    Maps are normalised through a (B,H,W,C) view, which is copy-free for
    channels_last input; the result has channels_last strides.
    """

    def __init__(self, dim: int, LayerNorm_type: str = "WithBias") -> None:
        super().__init__()
        if LayerNorm_type not in LAYER_NORM_TYPES:
            raise ConfigError(
                f"LayerNorm_type: unknown value {LayerNorm_type!r}"
                f"{did_you_mean(str(LayerNorm_type), LAYER_NORM_TYPES)}; expected one of {list(LAYER_NORM_TYPES)}")
        self.body = _WithBiasNorm(dim) if LayerNorm_type == "WithBias" else _BiasFreeNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.body(x)
