"""Transformer block with in-place residuals and stripe-wise norms (the CPU-fast formulation of
:class:`~hidiff.archs.transformer_block.TransformerBlock`)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from hidiff.archs.fast.memory import residual_add
from hidiff.archs.transformer_block import TransformerBlock


class FastTransformerBlock(TransformerBlock):
    """The textbook block's maths; without autograd the residual sums reuse existing storage.

    ``forward(x, film, inplace=True)`` lets the block accumulate into x's storage when
    autograd is off (the caller must not need x afterwards); it saves one full-size
    map at the peak.  A branch with ``takes_norm = True`` applies its LayerNorm itself,
    stripe by stripe.
    """

    fused = True

    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None, inplace: bool = False) -> torch.Tensor:
        if not self.fused:
            return super().forward(x, film)
        x = residual_add(x, self._branch(self.attn, self.norm1, x, film), inplace)
        return residual_add(x, self._branch(self.ffn, self.norm2, x, film), inplace=True)  # x is ours by now

    @staticmethod
    def _branch(branch: nn.Module, norm: nn.Module, x: torch.Tensor, film: Optional[torch.Tensor]) -> torch.Tensor:
        """branch(LN(x)); a branch with ``takes_norm = True`` applies the norm itself, stripe by stripe."""
        if getattr(branch, "takes_norm", False):
            return branch(x, film, norm=norm)
        return branch(norm(x), film)
