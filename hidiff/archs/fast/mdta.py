"""MDTA computed without its full-size temporaries (the CPU-fast formulation of :class:`~hidiff.archs.mdta.MDTA`)."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

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

    With ``recompute_inputs`` (``train.recompute_attention``), a training forward keeps the block's input and
    q, k, v for backward: LayerNorm and the q, k, v convolutions (1x1 and depthwise) are run again in backward
    instead of stored (the gradients are the same, bit for bit).
    """

    fused = True
    recompute_inputs = False
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
        stripes = inference_stripes(x, self.inference_chunk_pixels)
        if len(stripes) == 1 and self.recompute_inputs and torch.is_grad_enabled():
            # no random numbers inside, so the RNG state need not be saved and restored
            q, k, v = checkpoint(self._qkv, x, prep, use_reentrant=False, preserve_rng_state=False)
            mix = self._mix(*self._sums(q, k))
            return self._finish(torch.matmul(v, mix.to(v.dtype)).view(b, h, w, c))
        whole = None
        if len(stripes) == 1:
            whole = x if prep is None else prep(x)
        grams, sq_q, sq_k = [0.0] * self.num_heads, 0.0, 0.0
        for r0, r1 in stripes:  # pass 1: sums over pixels of q_i k_j, q_i^2 and k_j^2
            u, top = (whole, 0) if whole is not None else halo_rows(x, r0, r1, prep)
            q, k = self._branch(u, 0, top, r1 - r0), self._branch(u, 1, top, r1 - r0)
            del u
            stripe_grams, stripe_q, stripe_k = self._sums(q, k)
            del q, k
            grams = [g + s for g, s in zip(grams, stripe_grams)]
            sq_q, sq_k = sq_q + stripe_q, sq_k + stripe_k
        mix = self._mix(grams, sq_q, sq_k)
        if whole is not None:
            v = self._branch(whole, 2)
            out = torch.matmul(v, mix.to(v.dtype)).view(b, h, w, c)
        else:  # pass 2: v and the output, stripe by stripe
            out = x.new_empty(b, h, w, c)
            for r0, r1 in stripes:
                u, top = halo_rows(x, r0, r1, prep)
                matmul_into(out[:, r0:r1], self._branch(u, 2, top, r1 - r0), mix)
        return self._finish(out)

    def _qkv(self, x: torch.Tensor, prep: Optional[Prep]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v tokens of the whole map x (LayerNorm / FiLM by ``prep`` first)."""
        u = x if prep is None else prep(x)
        return self._branch(u, 0), self._branch(u, 1), self._branch(u, 2)

    def _sums(self, q: torch.Tensor, k: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Per head, the sums over pixels of q_i k_j; the sums of q_i^2 and of k_j^2."""
        d = q.shape[-1] // self.num_heads
        if q.dtype == torch.float16:  # raw dot products may exceed the fp16 range
            q, k = q.float(), k.float()
        grams = [per_sample(_gram, q[..., i * d:(i + 1) * d], k[..., i * d:(i + 1) * d])
                 for i in range(self.num_heads)]
        return grams, per_sample(_sum_squares, q), per_sample(_sum_squares, k)

    def _mix(self, grams: List[torch.Tensor], sq_q: torch.Tensor, sq_k: torch.Tensor) -> torch.Tensor:
        """(B, C, C): the softmax attention folded into ``project_out`` (out tokens = v tokens @ mix)."""
        heads = self.num_heads
        gram = torch.stack(grams, 1).float()  # (B, heads, d, d)
        b, d, c = gram.shape[0], gram.shape[-1], gram.shape[-1] * heads
        # F.normalize semantics: divide by max(norm, 1e-12).
        nq = sq_q.sqrt().clamp_min(1e-12).view(b, heads, d, 1)
        nk = sq_k.sqrt().clamp_min(1e-12).view(b, heads, 1, d)
        attn = torch.softmax(gram / (nq * nk) * self.temperature.float(), dim=-1)
        # out = W_p . blockdiag(attn) . v  ->  fold the small matrices first.
        w_p = self.project_out.weight.view(c, heads, d).float()
        return torch.einsum("ohi,bhij->bohj", w_p, attn).reshape(b, c, c).transpose(1, 2)

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) tokens -> (B, C, H, W) feature map, plus ``project_out``'s bias."""
        out = out.permute(0, 3, 1, 2)
        if self.project_out.bias is not None:
            out = out + self.project_out.bias.to(out.dtype).view(1, out.shape[1], 1, 1)
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
    """(B, P, C) -> (B, C) float32 sums over pixels of t^2."""
    return t.float().square().sum(1)
