"""The sampled, normalised 1-D Gaussian window used by every SSIM variant here."""
from __future__ import annotations

import numpy as np


def gaussian_window(sigma: float = 1.5, size: int = 11) -> np.ndarray:
    """``exp(-x^2 / (2 sigma^2))`` at integer offsets -size//2..size//2, summing to 1 (float64)."""
    if size % 2 != 1 or size < 1:
        raise ValueError(f"Gaussian window size must be odd and positive, got {size}")
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def ssim_mean(a, b, filt, c1: float, c2: float) -> float:
    """Mean of the SSIM map of ``a`` and ``b`` (float64) with local statistics from ``filt``.

    Every SSIM variant here differs only in ``filt`` (its window and border rule)
    and in the constants; the SSIM formula itself is shared.
    """
    mu1, mu2 = filt(a), filt(b)
    s11 = filt(a * a) - mu1 * mu1
    s22 = filt(b * b) - mu2 * mu2
    s12 = filt(a * b) - mu1 * mu2
    num = (2 * mu1 * mu2 + c1) * (2 * s12 + c2)
    den = (mu1 * mu1 + mu2 * mu2 + c1) * (s11 + s22 + c2)
    return float((num / den).mean())
