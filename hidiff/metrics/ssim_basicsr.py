"""SSIM as BasicSR's ``calculate_ssim`` computes it (Wang et al.'s reference ``ssim_index``).

Per channel, on values in [0, 255] in float64: 11x11 Gaussian window (sigma 1.5),
constants C1 = (0.01*255)^2 and C2 = (0.03*255)^2, SSIM map over the "valid" region
only (5 pixels dropped on every side), mean of the map; then the mean over channels.
This is what the HI-Diff/BasicSR test log prints; it is *not* the GoPro/HIDE paper
SSIM (see ``ssim_matlab3d``).
"""
from __future__ import annotations

import cv2
import numpy as np

from hidiff.errors import DataError
from hidiff.metrics._arrays import uint8_pair
from hidiff.metrics._gaussian import gaussian_window, ssim_mean

_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def _ssim_valid_2d(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over the valid region of one float64 channel (values in [0, 255])."""
    g = gaussian_window(1.5, 11)
    r = len(g) // 2
    if min(a.shape) <= 2 * r:
        raise DataError(f"ssim_basicsr: a {a.shape[0]}x{a.shape[1]} image has no valid region "
                        f"for an 11x11 window; it needs at least 11x11 pixels")

    def filt(x: np.ndarray) -> np.ndarray:
        # The border mode is irrelevant: only the interior ("valid") values are kept.
        return cv2.sepFilter2D(x, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)[r:-r, r:-r]

    return ssim_mean(a, b, filt, _C1, _C2)


def ssim_basicsr(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """BasicSR SSIM of two uint8 images (HxW or HxWxC RGB), per channel then averaged."""
    a, b = uint8_pair(img1, img2, "ssim_basicsr", crop_border, y_channel)
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.ndim == 2:
        return _ssim_valid_2d(a, b)
    return float(np.mean([_ssim_valid_2d(np.ascontiguousarray(a[..., c]), np.ascontiguousarray(b[..., c]))
                          for c in range(a.shape[2])]))
