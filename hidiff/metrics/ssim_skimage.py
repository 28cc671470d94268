"""SSIM as ``skimage.metrics.structural_similarity`` computes it with its defaults.

This is the DPDD protocol of Restormer/Swintormer (docs/protocols.md, dpdd): images in
[0, 1], ``data_range=1``, 7x7 uniform window, sample covariance, K1 = 0.01,
K2 = 0.03, per-channel mean.  uint8/uint16 inputs are scaled to [0, 1] first.  Images need at
least 7x7 pixels (``MIN_SIDE``), the window.
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from hidiff.metrics._arrays import check_pair, require_min_side, to_unit_float

#: the shorter side an image needs: skimage's default 7x7 window
MIN_SIDE = 7


def ssim_skimage(img1: np.ndarray, img2: np.ndarray) -> float:
    """skimage default SSIM (7x7 uniform window) on [0, 1] images, channels averaged."""
    a, b = check_pair(img1, img2, "ssim_skimage")
    require_min_side(a, MIN_SIDE, "ssim_skimage", "the 7x7 window")
    a, b = to_unit_float(a), to_unit_float(b)
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=-1 if a.ndim == 3 else None))
