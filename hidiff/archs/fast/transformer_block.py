"""Transformer block with in-place residuals and stripe-wise norms (the CPU-fast formulation of
:class:`~hidiff.archs.transformer_block.TransformerBlock`)."""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn as nn

from hidiff.archs.fast.gdfn import FastGDFN
from hidiff.archs.fast.memory import residual_add
from hidiff.archs.fast.selective import recompute_selectively
from hidiff.archs.transformer_block import TransformerBlock


class FastTransformerBlock(TransformerBlock):
    """The textbook block's maths; without autograd the residual sums reuse existing storage.

    ``forward(x, film, inplace=True)`` lets the block accumulate into x's storage when
    autograd is off (the caller must not need x afterwards); it saves one full-size
    map at the peak.  A branch with ``takes_norm = True`` applies its LayerNorm itself,
    stripe by stripe.
    """

    fused = True
    #: ``train.recompute_branches``: each branch keeps only its matrix products' outputs for backward
    #: (hidiff/archs/fast/selective.py)
    recompute_branches = False

    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None, inplace: bool = False) -> torch.Tensor:
        if not self.fused:
            return super().forward(x, film)
        branch = self._branch
        if self.recompute_branches and torch.is_grad_enabled():
            branch = functools.partial(recompute_selectively, self._branch)
        x = residual_add(x, branch(self.attn, self.norm1, x, film), inplace)
        return residual_add(x, branch(self.ffn, self.norm2, x, film), inplace=True)  # x is ours by now

    @staticmethod
    def _branch(branch: nn.Module, norm: nn.Module, x: torch.Tensor, film: Optional[torch.Tensor]) -> torch.Tensor:
        """branch(LN(x)); a branch with ``takes_norm = True`` applies the norm itself, stripe by stripe."""
        if getattr(branch, "takes_norm", False):
            return branch(x, film, norm=norm)
        return branch(norm(x), film)


def set_branch_recompute(net: nn.Module, on: bool) -> int:
    """Set ``recompute_branches`` (``train.recompute_branches``) in every fast Transformer block of ``net``;
    returns how many there are.  A feed-forward inside such a block then skips its own recomputation
    (``train.recompute_ffn``), which the branch's covers.  The official formulation never recomputes."""
    blocks = [m for m in net.modules() if isinstance(m, FastTransformerBlock)]
    for m in blocks:
        m.recompute_branches = on
        if isinstance(m.ffn, FastGDFN):
            m.ffn.inside_recomputed_branch = on
    return len(blocks)
