"""Hierarchical Integration Module (HIM) and the prior pyramid of HI-Diff.

The HIM is a cross-attention from image pixels (queries) to prior tokens (keys and
values), applied once at the start of a U-Net stage.  Its cost is linear in the
number of pixels because the prior has only a few tokens (16, 4 or 1).

The prior pyramid turns the encoder output z1 (B,16,C') into z2 (B,4,C') and
z3 (B,C') with two token-mixing linears (``down_1``, ``down_2``); C' = 4*embed_dim.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hidiff.archs.restormer_blocks import LayerNorm, residual_add, softmax_fp32
from hidiff.archs.sample_wise import SampleWiseLinear
from hidiff.errors import ConfigError


class HIM(nn.Module):
    """Cross-attention ``x + proj(softmax(Q K^T / sqrt(d)) V)`` with Q from LN(x), K,V from LN(prior).

    q and kv follow the U-Net ``bias`` flag (False in the official configs); ``proj``
    always has a bias (official).  Input (B,C,H,W) map and (B,N,prior_dim) tokens;
    output a (B,C,H,W) map with channels_last strides.

    ``fused=True`` never forms Q: per head, the query projection is folded into the
    N keys (K_h W_q,h) and the output projection into the N values (V_h W_p,h^T), and
    ``scaled_dot_product_attention`` runs on the normalised pixels directly.  This is
    the same maths with fewer FLOPs and one full-size temporary less.
    Without autograd the fused path also works through chunks of at most
    ``inference_chunk_pixels`` pixels (set by the U-Net), so no full-size
    temporaries besides the output are made.
    ``fused=False`` is the textbook q/kv/matmul/softmax/matmul/proj sequence.
    """

    inference_chunk_pixels: Optional[int] = None

    def __init__(self, dim: int, num_heads: int, prior_dim: int, bias: bool = False, fused: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"HIM: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.fused = fused
        self.scale = (dim // num_heads) ** -0.5
        self.norm1 = LayerNorm(dim, "WithBias")
        self.norm2 = LayerNorm(prior_dim, "WithBias")
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = SampleWiseLinear(prior_dim, dim * 2, bias=bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, prior: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """x + HIM(x, prior).  ``inplace=True`` (no autograd) writes the result into x's storage."""
        b, c, h, w = x.shape
        n = h * w
        tokens = x.permute(0, 2, 3, 1).reshape(b, n, c)  # a view of x for NCHW and channels_last
        keys = self._keys(*self.kv(self.norm2(prior)).chunk(2, dim=-1))
        inference = not torch.is_grad_enabled()
        step = self.inference_chunk_pixels if (self.fused and inference) else None
        if not step or step >= n:
            out = residual_add(tokens, self._attend(self.norm1(tokens), keys), inplace and inference)
        else:  # inference: pixels are independent, so attend chunk by chunk into one output
            out = tokens if inplace else None
            for p0 in range(0, n, step):
                part = tokens[:, p0:p0 + step]
                y = self._attend(self.norm1(part), keys).add_(part)
                if out is None:
                    out = y.new_empty(b, n, c)
                out[:, p0:p0 + step] = y
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, h, n, d)

    def _keys(self, k: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Per-head keys/values; for the fused path with W_q folded into K and W_p into V."""
        k, v = self._heads(k), self._heads(v)                         # (B, h, N, d)
        if not self.fused:
            return k, v
        heads, d = k.shape[1], k.shape[-1]
        c = heads * d
        w_q = self.q.weight.view(heads, d, c)                         # rows of W_q per head
        w_p = self.proj.weight.view(c, heads, d).transpose(0, 1)      # columns of W_p per head
        k_eff = k @ w_q                                               # (B, h, N, C): scores = xn . k_eff^T
        v_eff = v @ w_p.transpose(1, 2)                               # (B, h, N, C): out = sum_h attn_h . v_eff
        if self.q.bias is None:
            return k_eff, v_eff
        # the q bias adds a per-key constant to the scores
        mask = (k @ self.q.bias.view(heads, d, 1)).transpose(-2, -1) * self.scale  # (B, h, 1, N)
        return k_eff, v_eff, mask

    def _attend(self, xn: torch.Tensor, keys: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        """proj(attention(LN(x) -> prior)) for (B, n, C) normalised pixel tokens."""
        b, n, c = xn.shape
        if not self.fused:
            k, v = keys
            q = self._heads(self.q(xn))
            attn = softmax_fp32((q @ k.transpose(-2, -1)) * self.scale).to(v.dtype)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        k_eff, v_eff = keys[0].to(xn.dtype), keys[1].to(xn.dtype)
        mask = keys[2].to(xn.dtype) if len(keys) == 3 else None
        heads = k_eff.shape[1]
        query = xn.unsqueeze(1).expand(b, heads, n, c)
        out = F.scaled_dot_product_attention(query, k_eff, v_eff, attn_mask=mask, scale=self.scale)
        out = out.squeeze(1) if heads == 1 else out.sum(1)
        return out + self.proj.bias.to(out.dtype)


class SwapTokensChannels(nn.Module):
    """(B, N, C) <-> (B, C, N); the parameter-free slot of the official Rearrange layers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


def token_reducer(in_tokens: int, out_tokens: int, width: int) -> nn.Sequential:
    """Linear over the token axis (in_tokens -> out_tokens), then Linear(width, width) over channels.

    Indices 1 and 3 hold the weights, matching the official ``down_1``/``down_2`` keys.
    """
    return nn.Sequential(SwapTokensChannels(), SampleWiseLinear(in_tokens, out_tokens),
                         SwapTokensChannels(), SampleWiseLinear(width, width))


def prior_pyramid(z1: torch.Tensor, down_1: Optional[nn.Module], down_2: Optional[nn.Module]):
    """Return (z2, z3) from z1 (B,16,C'): z2 (B,4,C') and z3 (B,C'); None where the reducer is absent."""
    z2 = down_1(z1) if down_1 is not None else None
    z3 = down_2(z2).flatten(1) if (down_2 is not None and z2 is not None) else None
    return z2, z3
