"""PSNR variants.

``psnr_uint8``: 8-bit images, peak 255, MSE over every pixel and channel in float64.
This is MATLAB's ``psnr(out, gt)`` on uint8 RGB (the GoPro/HIDE paper numbers) and
BasicSR's ``calculate_psnr`` (its validation quantises to uint8 first).
``psnr_float``: float images with a given data range (DPDD protocol, 16-bit data); uint8/uint16
images are scored on their type's full range (peak 255/65535, i.e. as ``to_unit_float`` scales them), so
the 8-bit images training validation passes to ``val.metrics`` give the same number as ``psnr_uint8``.
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


def _float_peak(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """The peak ``psnr_float`` uses: ``data_range`` for float images, the type's maximum for uint8/uint16."""
    if data_range <= 0:
        raise DataError(f"psnr_float: data_range must be > 0, got {data_range}")
    floats = [np.issubdtype(x.dtype, np.floating) for x in (a, b)]
    if all(floats):
        return float(data_range)
    if a.dtype != b.dtype:
        raise DataError(f"psnr_float: the two images have different pixel types ({a.dtype} and {b.dtype}); "
                        "give both as floats in [0, data_range] or both as uint8/uint16")
    if a.dtype not in (np.uint8, np.uint16):
        raise DataError(f"psnr_float: unsupported pixel type {a.dtype}; expected float, uint8 or uint16")
    peak = float(np.iinfo(a.dtype).max)
    if data_range not in (1.0, peak):
        raise DataError(f"psnr_float: {a.dtype} images are scored on their type's range [0, {peak:g}]; "
                        f"data_range={data_range} does not fit them (leave it at 1 or give {peak:g})")
    return peak


def psnr_float(img1: np.ndarray, img2: np.ndarray, data_range: float = 1.0, crop_border: int = 0,
               y_channel: bool = False) -> float:
    """PSNR in dB of two float images whose values span [0, data_range] (uint8/uint16: their type's range)."""
    a, b = check_pair(img1, img2, "psnr_float")
    peak = _float_peak(a, b, data_range)
    a, b = _crop(a, crop_border, "psnr_float"), _crop(b, crop_border, "psnr_float")
    if y_channel:
        a, b = rgb_to_y(a, peak), rgb_to_y(b, peak)
    return _psnr(a, b, peak)
