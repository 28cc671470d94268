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
