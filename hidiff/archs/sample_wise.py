"""Layers and helpers whose per-sample output does not depend on the batch size.

MKL picks its GEMM kernel (and with it the summation order) from the number of
rows, so ``nn.Linear`` on a handful of rows per sample - the prior tokens, the
FiLM vectors - gives results that differ by a few float32 ulps between batch 1
and batch 4.  At inference every Linear of the prior path (latent encoder
head, MLP-mixers, denoisers, prior pyramid, and the HIM keys and FiLM of the
CPU-fast blocks in :mod:`hidiff.archs.fast`) therefore runs one sample at
a time: each call then has the shape of a batch-1 call.  They are tiny (<= 16
rows per sample), so the loop costs microseconds; in training mode the layer is
an ordinary batched Linear.  Parameters and state_dict keys are those of
``nn.Linear``.

The image-sized layers (convolutions, the HIM's attention) still run batched, so
a network's output for one tile changes with the tile batch by float rounding
(about 1e-5 in float32); it is bitwise the same only with one tile per call.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def each_sample(fn: Callable[..., torch.Tensor], *xs: torch.Tensor) -> torch.Tensor:
    """``fn`` on one sample of ``xs`` at a time, concatenated (a single call for batch 1)."""
    b = xs[0].shape[0]
    if b == 1:
        return fn(*xs)
    return torch.cat([fn(*(x[i:i + 1] for x in xs)) for i in range(b)])


class SampleWiseLinear(nn.Linear):
    """``nn.Linear`` that, outside training, runs each sample of the batch separately."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or x.dim() < 2:
            return F.linear(x, self.weight, self.bias)
        return each_sample(super().forward, x)


def sample_wise(*linears: Optional[nn.Linear]) -> Tuple[Optional[nn.Linear], ...]:
    """Turn built ``nn.Linear`` layers into ``SampleWiseLinear`` in place (same parameters); None passes.

    The layers keep their parameters, their initial values and their place in the
    state_dict; only the inference-time forward changes.
    """
    for linear in linears:
        if linear is not None:
            linear.__class__ = SampleWiseLinear
    return linears


def per_sample(fn: Callable[..., torch.Tensor], *xs: torch.Tensor) -> torch.Tensor:
    """``fn(*xs)``, computed one sample at a time when autograd is off.

    For long reductions (MDTA's Gram matrix and norms sum over every pixel) the
    CPU kernels split the work by output size and thread count, so a sample's
    sums change with the batch; one sample per call keeps a batch-1 call's order.
    """
    return fn(*xs) if torch.is_grad_enabled() else each_sample(fn, *xs)
