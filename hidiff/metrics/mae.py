"""Mean absolute error on [0, 1] images (the DPDD protocol's MAE).

uint8 inputs are divided by 255, uint16 by 65535, float inputs are taken as
already in [0, 1].  The mean runs over every pixel and channel, which equals the
mean of per-channel means used by Restormer/Swintormer.
"""
from __future__ import annotations

import numpy as np

from hidiff.metrics._arrays import check_pair, to_unit_float


def mae(img1: np.ndarray, img2: np.ndarray) -> float:
    """Mean |img1 - img2| after scaling both to [0, 1]."""
    a, b = check_pair(img1, img2, "mae")
    return float(np.mean(np.abs(to_unit_float(a) - to_unit_float(b))))
