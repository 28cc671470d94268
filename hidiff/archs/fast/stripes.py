"""Row stripes: a per-pixel + 3x3-depthwise layer computed on a few rows at a time, exactly.

Without autograd the fast blocks work through stripes of at most
``inference_chunk_pixels`` pixels; a 3x3 depthwise conv is exact inside a stripe
given one halo row per side, and per-pixel steps (LayerNorm, FiLM) run on the
stripe (``branch_input``).  Peak memory then no longer grows with the hidden
width times the image, and temporaries stay cache-sized.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Prep = Callable[[torch.Tensor], torch.Tensor]


def row_stripes(height: int, width: int, max_pixels: Optional[int]) -> List[Tuple[int, int]]:
    """Split rows [0, height) into stripes of at most ``max_pixels`` pixels (one stripe if None/0)."""
    if not max_pixels or height * width <= max_pixels:
        return [(0, height)]
    rows = max(1, max_pixels // width)
    return [(r, min(r + rows, height)) for r in range(0, height, rows)]


def inference_chunk(x: torch.Tensor, max_pixels: Optional[int]) -> Optional[int]:
    """The chunk size (pixels) a fast block works through x in: ``max_pixels`` without autograd on the CPU,
    else None (x whole).

    Chunks bound the CPU's memory.  On CUDA the tiler bounds memory instead, and the chunks' many
    small kernels cost more than they save (docs/speed.md, the GPU check), so x is taken whole there.
    """
    if torch.is_grad_enabled() or x.device.type != "cpu":
        return None
    return max_pixels


def inference_stripes(x: torch.Tensor, max_pixels: Optional[int]) -> List[Tuple[int, int]]:
    """The row stripes a fast block works in for x (B, C, H, W): several only where ``inference_chunk`` chunks."""
    return row_stripes(x.shape[2], x.shape[3], inference_chunk(x, max_pixels))


@contextlib.contextmanager
def whole_images(*modules: nn.Module) -> Iterator[None]:
    """Temporarily take images whole in every chunk-aware submodule (``inference_chunk_pixels`` None).

    Tracing and export need it: the stripe loop depends on the image size, so a graph traced
    with stripes would hold the example size's stripes as constants and fail (or cut rows) at
    any other size.  Results are unchanged: stripes are exact.
    """
    saved = [(m, m.inference_chunk_pixels) for root in modules for m in root.modules()
             if hasattr(m, "inference_chunk_pixels")]
    for m, _ in saved:
        m.inference_chunk_pixels = None
    try:
        yield
    finally:
        for m, value in saved:
            m.inference_chunk_pixels = value


def halo_rows(x: torch.Tensor, r0: int, r1: int, prep: Optional[Prep] = None) -> Tuple[torch.Tensor, int]:
    """Rows [r0-1, r1+1) (clipped to the map) of x through ``prep``, and where row r0 sits in them.

    ``prep`` is per-pixel (LayerNorm, FiLM), so it may run on a stripe.  The one halo
    row per side is what a 3x3 depthwise conv needs to be exact inside the stripe.
    """
    a, z = max(r0 - 1, 0), min(r1 + 1, x.shape[2])
    rows = x[:, :, a:z]
    return (rows if prep is None else prep(rows)), r0 - a


def pointwise_depthwise(pw: nn.Conv2d, dw: nn.Conv2d, u: torch.Tensor, lo: int, hi: int,
                        top: int = 0, rows: Optional[int] = None) -> torch.Tensor:
    """Channels [lo, hi) of ``dw(pw(u))`` (1x1 conv then depthwise 3x3, padding 1), output rows [top, top+rows).

    Computing the channel groups of a layer separately keeps each result contiguous
    (fast elementwise ops) and lets the caller free one group before the next.
    """
    y = depthwise(dw, pointwise(pw, u, lo, hi), lo, hi)
    if rows is None or (top == 0 and rows == y.shape[2]):
        return y
    return y[:, :, top:top + rows]


def pointwise(pw: nn.Conv2d, u: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Output channels [lo, hi) of the 1x1 conv ``pw`` of u."""
    return F.conv2d(u, pw.weight[lo:hi], None if pw.bias is None else pw.bias[lo:hi])


def depthwise(dw: nn.Conv2d, y: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """The channels [lo, hi) of the depthwise 3x3 conv ``dw`` (padding 1), applied to y (those channels only)."""
    return F.conv2d(y, dw.weight[lo:hi], None if dw.bias is None else dw.bias[lo:hi], padding=1, groups=hi - lo)


def branch_input(norm: Optional[nn.Module], ln1: Optional[nn.Linear], ln2: Optional[nn.Linear],
                 film: Optional[torch.Tensor], owner: str) -> Optional[Prep]:
    """Per-pixel pre-processing of a branch input: optional LayerNorm, then optional FiLM (None if neither).

    The FiLM vectors ``ln1(film)``, ``ln2(film)`` are computed once, here, for all stripes.
    """
    if ln1 is not None:
        if film is None:
            raise ValueError(f"{owner} was built with FiLM (film_dim set) but got film=None")
        scale, shift = ln1(film), ln2(film)
        b, c = scale.shape
        scale, shift = scale.view(b, c, 1, 1), shift.view(b, c, 1, 1)
    elif norm is None:
        return None

    def prep(rows: torch.Tensor) -> torch.Tensor:
        u = rows if norm is None else norm(rows)
        return u if ln1 is None else u * scale + shift

    return prep
