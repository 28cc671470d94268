"""MDTA computed without its full-size temporaries (the CPU-fast formulation of :class:`~hidiff.archs.mdta.MDTA`)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from hidiff.archs.fast.memory import matmul_into
from hidiff.archs.fast.stripes import Prep, branch_input, halo_rows, inference_stripes, pointwise_depthwise
from hidiff.archs.mdta import MDTA
from hidiff.archs.sample_wise import per_sample, sample_wise


class FastMDTA(MDTA):
    """MDTA's maths, reorganised: the Gram matrix q k^T is formed from the raw q, k and divided by the
    outer product of their norms afterwards; the (C x C) attention is folded into ``project_out``, so
    one token GEMM yields the output; q, k, v are computed one after the other.

    Without autograd, on the CPU, both passes run over row stripes of at most ``inference_chunk_pixels``
    pixels (Gram and norms are sums over pixels, so the stripes accumulate them
    exactly), and the sums are taken one sample at a time.
    """

    fused = True
    inference_chunk_pixels: Optional[int] = None
    takes_norm = True  # forward(x, film, norm=...) normalises stripe by stripe

    def __init__(self, dim: int, num_heads: int, bias: bool = False, film_dim: Optional[int] = None) -> None:
        super().__init__(dim, num_heads, bias, film_dim)
        sample_wise(self.ln1, self.ln2)

    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None,
                norm: Optional[nn.Module] = None) -> torch.Tensor:
        """Attention of x (B,C,H,W); with ``norm``, x is un-normalised and LN(x) is taken stripe-wise."""
        if not self.fused:
            return super().forward(x if norm is None else norm(x), film)
        return self._fused(x, branch_input(norm, self.ln1, self.ln2, film, "MDTA"))

    def _branch(self, u: torch.Tensor, part: int, top: int = 0, rows: Optional[int] = None) -> torch.Tensor:
        """q (part 0), k (1) or v (2) of the rows [top, top+rows) of u, as (B, pixels, C) tokens."""
        c = u.shape[1]
        y = pointwise_depthwise(self.qkv, self.qkv_dwconv, u, part * c, (part + 1) * c, top, rows)
        return y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, c)

    def _fused(self, x: torch.Tensor, prep: Optional[Prep]) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, d = self.num_heads, c // self.num_heads
        stripes = inference_stripes(x, self.inference_chunk_pixels)
        whole = None
        if len(stripes) == 1:
            whole = x if prep is None else prep(x)
        grams, sq_q, sq_k = [0.0] * heads, 0.0, 0.0
        for r0, r1 in stripes:  # pass 1: sums over pixels of q_i k_j, q_i^2 and k_j^2
            u, top = (whole, 0) if whole is not None else halo_rows(x, r0, r1, prep)
            q, k = self._branch(u, 0, top, r1 - r0), self._branch(u, 1, top, r1 - r0)
            del u
            if q.dtype == torch.float16:  # raw dot products may exceed the fp16 range
                q, k = q.float(), k.float()
            for i in range(heads):
                grams[i] = grams[i] + per_sample(_gram, q[..., i * d:(i + 1) * d], k[..., i * d:(i + 1) * d])
            sq_q = sq_q + per_sample(_sum_squares, q)
            sq_k = sq_k + per_sample(_sum_squares, k)
            del q, k
        gram = torch.stack(grams, 1)  # (B, heads, d, d)
        acc = torch.promote_types(gram.dtype, torch.float32)  # float32, or float64 for a float64 model
        gram = gram.to(acc)
        # F.normalize semantics: divide by max(norm, 1e-12).
        nq = sq_q.sqrt().clamp_min(1e-12).view(b, heads, d, 1)
        nk = sq_k.sqrt().clamp_min(1e-12).view(b, heads, 1, d)
        attn = torch.softmax(gram / (nq * nk) * self.temperature.to(acc), dim=-1)
        # out = W_p . blockdiag(attn) . v  ->  fold the small matrices first.
        w_p = self.project_out.weight.view(c, heads, d).to(acc)
        mix = torch.einsum("ohi,bhij->bohj", w_p, attn).reshape(b, c, c).transpose(1, 2)
        if whole is not None:
            v = self._branch(whole, 2)
            out = torch.matmul(v, mix.to(v.dtype)).view(b, h, w, c)
        else:  # pass 2: v and the output, stripe by stripe
            out = x.new_empty(b, h, w, c)
            for r0, r1 in stripes:
                u, top = halo_rows(x, r0, r1, prep)
                matmul_into(out[:, r0:r1], self._branch(u, 2, top, r1 - r0), mix)
        out = out.permute(0, 3, 1, 2)
        if self.project_out.bias is not None:
            out = out + self.project_out.bias.to(out.dtype).view(1, c, 1, 1)
        return out


def _gram(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, P, d) x (B, P, d) -> (B, d, d): the sums over pixels of q_i k_j, in the inputs' dtype.

    Autocast is switched off here: it would cast float32 q, k back to float16, whose range the
    sums of raw (un-normalised) products over a 256x256 crop exceed.
    """
    if q.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(q.device.type):
        with torch.autocast(q.device.type, enabled=False):
            return q.transpose(1, 2) @ k
    return q.transpose(1, 2) @ k


def _sum_squares(t: torch.Tensor) -> torch.Tensor:
    """(B, P, C) -> (B, C) sums over pixels of t^2, in float32 or wider."""
    return t.to(torch.promote_types(t.dtype, torch.float32)).square().sum(1)
