"""x8 geometric self-ensemble: average a restoration over the 8 dihedral transforms.

Transform k (0..7) is: flip the width axis if k >= 4, then rotate by (k % 4) * 90
degrees.  Each transformed batch is restored, transformed back and the 8 results
are averaged.  Rotations by 90/270 degrees swap H and W, so the wrapped function
must accept both orientations (any fully convolutional network does, after its own
padding to a size multiple).
"""
from __future__ import annotations

from typing import Callable

import torch

N_TRANSFORMS = 8


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply dihedral transform ``k`` to the last two (H, W) axes."""
    if not 0 <= k < N_TRANSFORMS:
        raise ValueError(f"dihedral transform index must be in 0..7, got {k}")
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1))


def dihedral_inverse(y: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral` ``k``."""
    if not 0 <= k < N_TRANSFORMS:
        raise ValueError(f"dihedral transform index must be in 0..7, got {k}")
    y = torch.rot90(y, -(k % 4), dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def self_ensemble(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Mean over the 8 dihedral transforms t of ``t^-1(fn(t(x)))`` for a (B, C, H, W) batch.

    ``fn`` maps an image batch to one of the same spatial size.  The sum is kept in
    float64 (exact for 8 float32/float16 terms of equal value, so an identity ``fn``
    returns ``x`` bit for bit) and cast back to ``fn``'s output dtype.
    """
    if x.dim() != 4:
        raise ValueError(f"self_ensemble expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    acc: torch.Tensor | None = None
    out_dtype = x.dtype
    for k in range(N_TRANSFORMS):
        xt = dihedral(x, k)
        y = fn(xt)
        if y.shape[-2:] != xt.shape[-2:]:
            raise ValueError(f"self_ensemble: fn changed the spatial size {tuple(xt.shape[-2:])} -> "
                             f"{tuple(y.shape[-2:])} (transform {k}); it must keep H and W")
        y = dihedral_inverse(y, k)
        out_dtype = y.dtype
        y = y.to(torch.float64)
        acc = y if acc is None else acc + y
    assert acc is not None
    return (acc / N_TRANSFORMS).to(out_dtype)
