"""Tensor helpers for window attention (Swin / Swintormer): partitions, masks, position tables.

Everything here is a pure function of shapes (no parameters), so the masks are
built once per (size, window, shift, device) and cached instead of being rebuilt
on the CPU in every forward of every shifted block (docs/quirks.md, quirk S5).

Window order is image-major, then window row, then window column; inside a
window, pixels are flattened row-major (as in Swin and Swintormer).
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch

#: additive logit for key/query pairs in different regions of a shifted window (Swin's value)
SHIFT_MASK_VALUE = -100.0
#: additive logit for keys that are padding; large enough that exp() is exactly 0 in fp32
PAD_MASK_VALUE = -1e9


def sink_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Swintormer's ``softmax_one``: ``exp(x_i - m) / (1 + sum_j exp(x_j - m))`` with m the row max.

    Equivalent to a softmax over the row plus one extra logit equal to the row
    max whose weight is dropped, so rows sum to a value in [1/2, 1).
    """
    m = x.amax(dim=dim, keepdim=True)
    e = torch.exp(x - m)
    return e / (1.0 + e.sum(dim=dim, keepdim=True))


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * nW, C, ws, ws); H and W must be multiples of ``ws``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // ws, ws, w // ws, ws)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(-1, c, ws, ws)


def window_merge(windows: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, C, ws, ws) -> (B, C, H, W)."""
    _, c, ws, _ = windows.shape
    x = windows.reshape(-1, h // ws, w // ws, c, ws, ws)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(-1, c, h, w)


def shift_region_labels(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """(H, W) integer labels of the regions of a map rolled by (-shift, -shift).

    Per axis the slices [0, n-ws), [n-ws, n-shift), [n-shift, n) get labels 0, 1, 2
    (Swin's construction); the 2-D label is ``3 * row_label + col_label``.
    """
    def axis(n: int) -> torch.Tensor:
        lab = torch.zeros(n, dtype=torch.long)
        lab[max(n - ws, 0):] = 1
        lab[max(n - shift, 0):] = 2
        return lab

    return axis(h)[:, None] * 3 + axis(w)[None, :]


def _attention_mask(h: int, w: int, ws: int, shift: int, valid_h: int, valid_w: int,
                    device: torch.device) -> Optional[torch.Tensor]:
    l = ws * ws
    mask = None
    if shift > 0:
        labels = window_partition(shift_region_labels(h, w, ws, shift)[None, None].float(), ws)
        labels = labels.reshape(-1, l)                                    # (nW, L)
        different = labels[:, :, None] != labels[:, None, :]              # (nW, L, L)
        mask = different.float() * SHIFT_MASK_VALUE
    if valid_h < h or valid_w < w:
        valid = torch.zeros(h, w)
        valid[:valid_h, :valid_w] = 1.0
        valid = torch.roll(valid, shifts=(-shift, -shift), dims=(0, 1)) if shift > 0 else valid
        keys = window_partition(valid[None, None], ws).reshape(-1, 1, l)  # (nW, 1, L)
        pad = (1.0 - keys) * PAD_MASK_VALUE
        mask = pad if mask is None else mask + pad
    return None if mask is None else mask.to(device)


_attention_mask_cached = functools.lru_cache(maxsize=32)(_attention_mask)
#: masks larger than this are built anew on every call instead of being kept in the module-wide cache, which
#: would otherwise hold them after their model is gone (a whole 1680x1120 image's level-1 mask is ~0.5 GB)
CACHED_MASK_MAX_BYTES = 32 * 2**20


def window_attention_mask(h: int, w: int, ws: int, shift: int, valid_h: Optional[int] = None,
                          valid_w: Optional[int] = None,
                          device: torch.device | str = "cpu") -> Optional[torch.Tensor]:
    """Additive logits mask for window attention on an (h, w) map (already padded to ``ws``).

    Combines Swin's shift mask (-100 between pixels of different regions of a
    shifted window, shape (nW, L, L)) with a padding mask that removes keys
    outside the valid (valid_h, valid_w) top-left area (shape (nW, 1, L) when
    there is no shift).  Returns None when neither applies.  Masks up to
    ``CACHED_MASK_MAX_BYTES`` are cached; treat the result as read-only.
    """
    valid_h = h if valid_h is None else valid_h
    valid_w = w if valid_w is None else valid_w
    args = (int(h), int(w), int(ws), int(shift), int(valid_h), int(valid_w), torch.device(device))
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing():
        # built anew: a mask made while exporting is a fake tensor, and cached it would reach later eager calls
        return _attention_mask(*args)
    if int(h) * int(w) * int(ws) ** 2 * 4 > CACHED_MASK_MAX_BYTES:  # the (nW, L, L) float32 shift mask's size
        return _attention_mask(*args)
    return _attention_mask_cached(*args)


def relative_position_index(ws: int) -> torch.Tensor:
    """(L, L) index into a (2ws-1)^2 table: ``(dy + ws-1) * (2ws-1) + (dx + ws-1)``, d = query - key."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # (2, L)
    rel = coords[:, :, None] - coords[:, None, :] + (ws - 1)                                          # (2, L, L)
    return rel[0] * (2 * ws - 1) + rel[1]


def log_cpb_table(ws: int) -> torch.Tensor:
    """((2ws-1)^2, 2) Swin-V2 log-spaced relative coordinates (dy, dx) fed to the position-bias MLP.

    Each offset d in [-(ws-1), ws-1] becomes u = d / (ws-1) * 8, then
    sign(u) * log2(1 + |u|) / log2(8).
    """
    if ws < 2:
        raise ValueError(f"window size must be >= 2 for the continuous position bias, got {ws}")
    r = torch.arange(-(ws - 1), ws, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1) / (ws - 1) * 8.0
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8.0)
    return table.reshape(-1, 2)
