"""GDFN computed half by half and stripe by stripe (the CPU-fast formulation of :class:`~hidiff.archs.gdfn.GDFN`)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from hidiff.archs.fast.memory import matmul_into
from hidiff.archs.fast.stripes import (branch_input, depthwise, halo_rows, inference_stripes, pointwise,
                                       pointwise_depthwise)
from hidiff.archs.gdfn import GDFN
from hidiff.archs.sample_wise import sample_wise


class FastGDFN(GDFN):
    """GDFN's maths with the gate GELU(x1) and the value x2 computed one after the other (contiguous
    results, lower peak); without autograd, on the CPU, the layer runs over row stripes of at most
    ``inference_chunk_pixels`` pixels (exact: one halo row is recomputed per side) and
    ``project_out`` is a token GEMM written straight into the output.

    With ``recompute_hidden`` (``train.recompute_ffn``), a training forward stores the two halves of
    ``project_in``'s output and the gated product, and runs the depthwise conv and the GELU gate again in
    backward instead of storing their four outputs: a fifth less peak memory per training step at no
    measurable cost on a CPU (docs/speed.md).  The gradients are the same, bit for bit.
    """

    fused = True
    recompute_hidden = False
    inside_recomputed_branch = False  # its block recomputes the whole branch (train.recompute_branches)
    inference_chunk_pixels: Optional[int] = None
    takes_norm = True  # forward(x, film, norm=...) normalises stripe by stripe

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool = False,
                 film_dim: Optional[int] = None) -> None:
        super().__init__(dim, ffn_expansion_factor, bias, film_dim)
        self.hidden = self.project_out.in_channels
        sample_wise(self.ln1, self.ln2)

    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None,
                norm: Optional[nn.Module] = None) -> torch.Tensor:
        """FFN of x (B,C,H,W); with ``norm``, x is un-normalised and LN(x) is taken stripe-wise."""
        if not self.fused:
            return super().forward(x if norm is None else norm(x), film)
        prep = branch_input(norm, self.ln1, self.ln2, film, "GDFN")
        b, c, h, w = x.shape
        stripes = inference_stripes(x, self.inference_chunk_pixels)
        if len(stripes) == 1:
            u = x if prep is None else prep(x)
            if self.recompute_hidden and not self.inside_recomputed_branch and torch.is_grad_enabled():
                return self.project_out(self._recomputed_gate(u))
            return self.project_out(self._gated(u))
        w_out = self.project_out.weight.view(c, self.hidden).t()
        out = x.new_empty(b, h, w, c)
        for r0, r1 in stripes:
            u, top = halo_rows(x, r0, r1, prep)
            gated = self._gated(u, top, r1 - r0)
            del u
            matmul_into(out[:, r0:r1], gated.permute(0, 2, 3, 1).reshape(b, -1, self.hidden), w_out)
        out = out.permute(0, 3, 1, 2)
        if self.project_out.bias is not None:
            out = out + self.project_out.bias.to(out.dtype).view(1, c, 1, 1)
        return out

    def _recomputed_gate(self, u: torch.Tensor) -> torch.Tensor:
        """GELU(x1) * x2 of u, whose depthwise outputs and GELU are recomputed in backward (not stored)."""
        n = self.hidden
        x1, x2 = pointwise(self.project_in, u, 0, n), pointwise(self.project_in, u, n, 2 * n)
        # no random numbers inside, so the RNG state need not be saved and restored
        return checkpoint(self._depthwise_gate, x1, x2, use_reentrant=False, preserve_rng_state=False)

    def _depthwise_gate(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        n = self.hidden
        return F.gelu(depthwise(self.dwconv, x1, 0, n)) * depthwise(self.dwconv, x2, n, 2 * n)

    def _gated(self, u: torch.Tensor, top: int = 0, rows: Optional[int] = None) -> torch.Tensor:
        """GELU(x1) * x2 for the rows [top, top+rows) of u."""
        n = self.hidden
        gate = F.gelu(pointwise_depthwise(self.project_in, self.dwconv, u, 0, n, top, rows))
        value = pointwise_depthwise(self.project_in, self.dwconv, u, n, 2 * n, top, rows)
        return gate * value if torch.is_grad_enabled() else gate.mul_(value)


def set_ffn_recompute(net: nn.Module, on: bool) -> int:
    """Set ``recompute_hidden`` (``train.recompute_ffn``) in every :class:`FastGDFN` of ``net``; returns how
    many there are.  The official formulation (``fused_attention: false``) never recomputes."""
    blocks = [m for m in net.modules() if isinstance(m, FastGDFN)]
    for m in blocks:
        m.recompute_hidden = on
    return len(blocks)
