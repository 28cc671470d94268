"""The one source of the prior's initial noise x_T.

Each image's x_T is seeded from its file stem and the run seed (:func:`image_seed`),
each tile's from that seed and the tile's place (:func:`tile_seed`), and drawn on
the CPU generator (:func:`draw_noise`).  Seeding per image instead of from a global
RNG (docs/quirks.md, quirk 13) makes each output independent of processing order,
batch composition and device.
"""
from __future__ import annotations

import hashlib
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

_MASK_63 = (1 << 63) - 1


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & _MASK_63


def image_seed(key: str, base_seed: int) -> int:
    """A stable 63-bit seed for one image, from its file stem and the run seed."""
    return _seed_of(f"{int(base_seed)}:{key}")


def tile_seed(seed: int, b: int, y: int, x: int) -> int:
    """A 63-bit seed for the tile at (y, x) of image ``b``: a pure function of its arguments.

    ``tile_seed(seed, b, 0, 0)`` also seeds the whole-image run, so a tile covering
    the whole image reproduces it.
    """
    return _seed_of(f"tile:{int(seed)}:{b}:{y}:{x}")


def draw_noise(shape: Sequence[int], seed: Optional[int] = None, *, generator: Optional[torch.Generator] = None,
               device: Union[str, torch.device, None] = None) -> Tensor:
    """x_T ~ N(0, I) of ``shape`` in float32, drawn on the CPU and moved to ``device``.

    From a fresh generator seeded with ``seed``, else from ``generator`` (its
    current state), else from the global RNG.
    """
    if seed is not None:
        if generator is not None:
            raise ValueError("draw_noise: give seed or generator, not both")
        generator = torch.Generator().manual_seed(int(seed))
    out = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    return out if device is None else out.to(device)
