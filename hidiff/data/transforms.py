"""Paired crops and the 8 dihedral transforms, drawn from a per-sample generator.

All functions work on HxWxC numpy arrays and apply the same geometry to every
array of a sample (input views and target), as HI-Diff's ``random_augmentation``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from hidiff.errors import DataError


def random_crop_box(h: int, w: int, size: int, rng: np.random.Generator, *, what: str = "image") -> tuple[int, int]:
    """Uniform top-left corner of a ``size`` x ``size`` crop inside an ``h`` x ``w`` image."""
    if h < size or w < size:
        raise DataError(f"{what} is {h}x{w} (HxW), smaller than the crop size {size}; "
                        f"lower gt_size or use larger images")
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return top, left


def paired_random_crop(arrays: Sequence[np.ndarray], size: int, rng: np.random.Generator,
                       *, what: str = "image") -> list[np.ndarray]:
    """Crop every array at the same random position (all must have the same HxW)."""
    h, w = arrays[0].shape[:2]
    top, left = random_crop_box(h, w, size, rng, what=what)
    return [a[top:top + size, left:left + size] for a in arrays]


def center_crop(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centred ``height`` x ``width`` window of ``img`` (offsets rounded down)."""
    h, w = img.shape[:2]
    if h < height or w < width:
        raise DataError(f"cannot centre-crop {height}x{width} from an image of {h}x{w}")
    top, left = (h - height) // 2, (w - width) // 2
    return img[top:top + height, left:left + width]


def dihedral(img: np.ndarray, mode: int) -> np.ndarray:
    """Dihedral transform ``mode`` in 0..7, in HI-Diff's order.

    0 identity, 1 flipud, 2 rot90, 3 rot90+flipud, 4 rot180, 5 rot180+flipud,
    6 rot270, 7 rot270+flipud (rotations counter-clockwise, as ``np.rot90``).
    """
    if not 0 <= mode <= 7:
        raise ValueError(f"dihedral mode must be in 0..7, got {mode}")
    out = np.rot90(img, k=mode // 2)
    if mode % 2:
        out = np.flipud(out)
    return out


def random_dihedral(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Apply one uniformly drawn dihedral transform to every array."""
    mode = int(rng.integers(0, 8))
    return [dihedral(a, mode) for a in arrays]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWxC float array -> contiguous CxHxW float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.float32).transpose(2, 0, 1)))
