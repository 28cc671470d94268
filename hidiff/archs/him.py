"""Hierarchical Integration Module (HIM) of HI-Diff: image pixels attend to the prior tokens.

Applied once at the start of a U-Net stage.  The attention map is (pixels x
tokens) with only 16, 4 or 1 prior tokens, so the cost is linear in the pixels.
The CPU-fast formulation of the same maths is :class:`hidiff.archs.fast.him.FastHIM`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from hidiff.archs.layer_norm import LayerNorm
from hidiff.errors import ConfigError


class HIM(nn.Module):
    """Cross-attention ``x + proj(softmax(Q K^T / sqrt(d)) V)`` with Q from LN(x), K and V from LN(prior).

    Input a (B,C,H,W) map and (B,N,prior_dim) prior tokens, output (B,C,H,W).
    ``q`` and ``kv`` follow the U-Net ``bias`` flag (False in the official
    configs); ``proj`` always has a bias, as in the official code.  Softmax runs in fp32 (fp64 for fp64 inputs).
    """

    def __init__(self, dim: int, num_heads: int, prior_dim: int, bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"HIM: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.norm1 = LayerNorm(dim, "WithBias")
        self.norm2 = LayerNorm(prior_dim, "WithBias")
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(prior_dim, dim * 2, bias=bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = rearrange(x, "b c h w -> b (h w) c")
        q = rearrange(self.q(self.norm1(x)), "b n (head d) -> b head n d", head=self.num_heads)
        k, v = (rearrange(t, "b n (head d) -> b head n d", head=self.num_heads)
                for t in self.kv(self.norm2(prior)).chunk(2, dim=-1))
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.to(torch.promote_types(attn.dtype, torch.float32)).softmax(dim=-1).to(v.dtype)
        x = x + self.proj(rearrange(attn @ v, "b head n d -> b n (head d)"))
        return rearrange(x, "b (h w) c -> b c h w", h=h, w=w)
