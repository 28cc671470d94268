"""Gated-Dconv Feed-forward Network (GDFN, Restormer), the feed-forward of HI-Diff's Transformer blocks.

The CPU-fast formulation of the same maths is :class:`hidiff.archs.fast.gdfn.FastGDFN`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from hidiff.archs.film import apply_film, film_linears
from hidiff.errors import ConfigError


class GDFN(nn.Module):
    """1x1 conv to 2 x hidden, depthwise 3x3, GELU(x1) * x2, 1x1 conv back; hidden = int(dim * factor).

    With ``film_dim`` the input is first FiLM-modulated by the prior vector passed
    as ``film`` (HI-Diff bottleneck).
    """

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool = False,
                 film_dim: Optional[int] = None) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        if hidden < 1:
            raise ConfigError(f"GDFN: ffn_expansion_factor={ffn_expansion_factor} gives no hidden channels")
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)
        self.ln1, self.ln2 = film_linears(film_dim, dim)

    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = apply_film(x, self.ln1, self.ln2, film, "GDFN")
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)
