"""PSNR variants.

``psnr_uint8``: 8-bit images, peak 255, MSE over every pixel and channel in float64.
This is MATLAB's ``psnr(out, gt)`` on uint8 RGB (the GoPro/HIDE paper numbers) and
BasicSR's ``calculate_psnr`` (its validation quantises to uint8 first).
``psnr_float``: float images with a given data range (DPDD protocol, 16-bit data).
Both return ``inf`` for identical images and accept ``crop_border`` (pixels cut from
every edge) and ``y_channel`` (BT.601 luma, MATLAB/BasicSR convention).
"""
from __future__ import annotations

import math

import numpy as np

from hidiff.errors import DataError
from hidiff.metrics._arrays import check_pair, crop_border as _crop, rgb_to_y, uint8_pair


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def psnr_uint8(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB of two uint8 images (HxW or HxWx3 RGB), peak 255."""
    a, b = uint8_pair(img1, img2, "psnr_uint8", crop_border, y_channel)
    return _psnr(a, b, 255.0)


def psnr_float(img1: np.ndarray, img2: np.ndarray, data_range: float = 1.0, crop_border: int = 0,
               y_channel: bool = False) -> float:
    """PSNR in dB of two float images whose values span [0, data_range]."""
    a, b = check_pair(img1, img2, "psnr_float")
    if data_range <= 0:
        raise DataError(f"psnr_float: data_range must be > 0, got {data_range}")
    a, b = _crop(a, crop_border, "psnr_float"), _crop(b, crop_border, "psnr_float")
    if y_channel:
        a, b = rgb_to_y(a, data_range), rgb_to_y(b, data_range)
    return _psnr(a, b, float(data_range))
