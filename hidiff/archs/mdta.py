"""Multi-Dconv head Transposed Attention (MDTA, Restormer), the attention of HI-Diff's Transformer blocks.

Attention across channels instead of pixels: per head a (C/h x C/h) map, so the
cost grows linearly with the image.  The CPU-fast formulation of the same maths
is :class:`hidiff.archs.fast.mdta.FastMDTA`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from hidiff.archs.film import apply_film, film_linears
from hidiff.errors import ConfigError


class MDTA(nn.Module):
    """1x1 + depthwise 3x3 conv to q, k, v; softmax(q^ k^T * temperature) v over channels; 1x1 out.

    q, k are L2-normalised along the pixel axis; ``temperature`` is a learned
    per-head scale (init 1).  With ``film_dim`` the input is first FiLM-modulated by
    the prior vector passed as ``film`` (HI-Diff bottleneck).  Softmax runs in fp32 (fp64 for fp64 inputs).
    """

    def __init__(self, dim: int, num_heads: int, bias: bool = False, film_dim: Optional[int] = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"MDTA: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.ln1, self.ln2 = film_linears(film_dim, dim)

    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = apply_film(x, self.ln1, self.ln2, film, "MDTA")
        h, w = x.shape[-2:]
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (rearrange(t, "b (head c) h w -> b head c (h w)", head=self.num_heads) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        attn = attn.to(torch.promote_types(attn.dtype, torch.float32)).softmax(dim=-1).to(v.dtype)
        out = rearrange(attn @ v, "b head c (h w) -> b (head c) h w", head=self.num_heads, h=h, w=w)
        return self.project_out(out)
