"""HI-Diff's prior pyramid: z1 (B,16,C') -> z2 (B,4,C') -> z3 (B,C') with token-mixing linears.

``down_1``/``down_2`` each mix tokens with a Linear over the token axis, then
apply Linear(C', C') over channels; C' = 4*embed_dim.  The linears run one sample
at a time at inference (:mod:`hidiff.archs.sample_wise`).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from einops.layers.torch import Rearrange

from hidiff.archs.sample_wise import SampleWiseLinear


def token_reducer(in_tokens: int, out_tokens: int, width: int) -> nn.Sequential:
    """Linear over the token axis (in_tokens -> out_tokens), then Linear(width, width) over channels.

    Indices 1 and 3 hold the weights, matching the official ``down_1``/``down_2`` keys.
    """
    return nn.Sequential(Rearrange("b n c -> b c n"), SampleWiseLinear(in_tokens, out_tokens),
                         Rearrange("b c n -> b n c"), SampleWiseLinear(width, width))


def prior_pyramid(z1: torch.Tensor, down_1: Optional[nn.Module], down_2: Optional[nn.Module]):
    """Return (z2, z3) from z1 (B,16,C'): z2 (B,4,C') and z3 (B,C'); None where the reducer is absent."""
    z2 = down_1(z1) if down_1 is not None else None
    z3 = down_2(z2).flatten(1) if (down_2 is not None and z2 is not None) else None
    return z2, z3
