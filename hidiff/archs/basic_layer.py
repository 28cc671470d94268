"""One stage of HI-Diff's U-Net (official ``BasicLayer``): an optional HIM, then Transformer blocks."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from hidiff.archs.attention_registry import build_attention
from hidiff.archs.fast.gdfn import FastGDFN
from hidiff.archs.fast.him import FastHIM
from hidiff.archs.fast.transformer_block import FastTransformerBlock
from hidiff.archs.gdfn import GDFN
from hidiff.archs.him import HIM
from hidiff.archs.transformer_block import TransformerBlock


class BasicLayer(nn.Module):
    """A HIM applied once (``prior_dim`` set), then ``num_blocks`` Transformer blocks.

    The HIM (``him``) is created after ``blocks``, as in the official state_dict.
    ``film_dim`` set -> every block's attention and FFN is FiLM-modulated by a prior
    vector (official bottleneck).  ``fused`` picks the CPU-fast formulations of
    :mod:`hidiff.archs.fast` instead of the textbook classes (same parameters).
    """

    def __init__(self, dim: int, num_heads: int, num_blocks: int, ffn_expansion_factor: float, bias: bool,
                 LayerNorm_type: str, prior_dim: Optional[int] = None, film_dim: Optional[int] = None,
                 attn_type: str = "mdta", attn_options: Optional[dict] = None, fused: bool = True) -> None:
        super().__init__()
        block, ffn, him = (FastTransformerBlock, FastGDFN, FastHIM) if fused else (TransformerBlock, GDFN, HIM)
        self.blocks = nn.ModuleList([
            block(dim,
                  build_attention(attn_type, dim, num_heads, bias, film_dim=film_dim, fused=fused,
                                  **{**(attn_options or {}), "block_index": i}),
                  ffn(dim, ffn_expansion_factor, bias, film_dim=film_dim),
                  LayerNorm_type)
            for i in range(num_blocks)])
        self.him: Optional[HIM] = him(dim, num_heads, prior_dim, bias) if prior_dim else None

    def forward(self, x: torch.Tensor, prior: Optional[torch.Tensor] = None,
                film: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.him is not None:
            x = self.him(x, prior)
        for block in self.blocks:
            x = block(x, film)
        return x
