"""Several initial noises per image: how much the diffusion prior's randomness moves a restoration.

Seed ``k`` of an image is derived from its file stem like the single seed
(:func:`hidiff.inference.noise.image_seed`), and seed 0 *is* that seed,
so ``K = 1`` reproduces the ordinary run and no result depends on order.
Metrics become the mean over the K restorations plus their standard deviation
(``<column>_std``, ddof=1); the image written is the per-pixel mean of the K
outputs (or the first seed's); the optional std map is the per-pixel standard
deviation averaged over channels, as a 16-bit gray PNG (value = std x 65535).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor

from hidiff.inference.noise import image_seed

PRIOR_IMAGES = ("mean", "first")


def prior_seed(key: str, base_seed: int, k: int) -> int:
    """The seed of restoration ``k`` of image ``key`` (k = 0 is the ordinary per-image seed)."""
    return image_seed(key if k == 0 else f"{key}#prior{k}", base_seed)


def combine_rows(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One row from the per-seed rows: numbers as mean and ``_std``, flags true only if true for every seed."""
    if len(rows) == 1:
        return dict(rows[0])
    out: Dict[str, Any] = {}
    for col, first in rows[0].items():
        values = [r[col] for r in rows]
        if isinstance(first, (bool, np.bool_)):
            out[col] = bool(all(values))
        elif isinstance(first, (int, float, np.floating, np.integer)):
            arr = np.asarray(values, dtype=np.float64)
            out[col] = float(arr.mean())
            out[f"{col}_std"] = float(arr.std(ddof=1))
        else:
            out[col] = first
    return out


def combine_images(outputs: List[Tensor], how: str = "mean") -> Tensor:
    """The image to write: the per-pixel mean of the restorations, or the first seed's."""
    if how == "first" or len(outputs) == 1:
        return outputs[0]
    return torch.stack(outputs).mean(dim=0)


def std_map(outputs: List[Tensor]) -> np.ndarray:
    """HxW uint16: per-pixel standard deviation over the seeds (ddof=1), averaged over channels, x 65535."""
    stack = torch.stack([o.detach().float().cpu().reshape(o.shape[-3:]) for o in outputs])
    std = stack.std(dim=0, unbiased=True).mean(dim=0)
    return std.clamp(0, 1).mul(65535.0).round().to(torch.int32).numpy().astype(np.uint16)
