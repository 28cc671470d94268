"""What a training step may recompute in backward instead of storing (``train.recompute_ffn``,
``train.recompute_attention``): the cheap inner activations of the fast blocks.

Unlike activation checkpointing of whole U-Net stages (``train.checkpoint_levels``), only the layers
between a block's input and what its matrix products consume are recomputed (LayerNorm, the 1x1 and
depthwise convolutions, the GELU gate); the products' inputs stay stored.  The same kernels run again on
the same inputs, so the gradients are the same bit for bit (docs/speed.md).
"""
from __future__ import annotations

from typing import Tuple

import torch.nn as nn

from hidiff.archs.fast.gdfn import FastGDFN
from hidiff.archs.fast.mdta import FastMDTA


def set_recompute(net: nn.Module, ffn: bool, attention: bool) -> Tuple[int, int]:
    """Set recomputation in every fast GDFN (``ffn``) and fast MDTA (``attention``) of ``net``; returns how many
    of each ``net`` has.  The official formulation (``fused_attention: false``) never recomputes."""
    ffns = [m for m in net.modules() if isinstance(m, FastGDFN)]
    attns = [m for m in net.modules() if isinstance(m, FastMDTA)]
    for m in ffns:
        m.recompute_hidden = ffn
    for m in attns:
        m.recompute_inputs = attention
    return len(ffns), len(attns)
