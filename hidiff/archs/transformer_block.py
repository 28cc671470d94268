"""The Restormer Transformer block used at every HI-Diff (and Swintormer) U-Net stage.

The CPU-fast formulation of the same maths is
:class:`hidiff.archs.fast.transformer_block.FastTransformerBlock`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from hidiff.archs.layer_norm import LayerNorm


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + ffn(LN(x)); ``film`` (a prior vector) feeds both.

    ``attn`` is an attention module (MDTA in HI-Diff, see ``attention_registry``)
    and ``ffn`` a feed-forward module (GDFN); both map ``(x, film)`` to a map like x.
    """

    def __init__(self, dim: int, attn: nn.Module, ffn: nn.Module, LayerNorm_type: str = "WithBias") -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = attn
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = ffn

    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), film)
        return x + self.ffn(self.norm2(x), film)
