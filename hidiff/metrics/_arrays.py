"""Input checks shared by the metric variants: shapes, dtypes, border crops, Y channel.

Metrics take numpy images laid out HxW or HxWxC.  A metric that is defined on
8-bit images refuses anything but ``uint8`` instead of guessing a range from the
values (the Restormer ``img.max() <= 1`` guess is a known source of wrong SSIMs).
"""
from __future__ import annotations

import numpy as np

from hidiff.errors import DataError

# ITU-R BT.601 luma for RGB in [0, 1] giving Y in [16, 235] (MATLAB rgb2ycbcr; BasicSR's bgr2ycbcr).
_Y_WEIGHTS_RGB = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def check_pair(img1: np.ndarray, img2: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Return both images as numpy arrays after checking they have the same HxW(xC) shape."""
    a, b = np.asarray(img1), np.asarray(img2)
    if a.shape != b.shape:
        raise DataError(f"{metric}: the two images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3):
        raise DataError(f"{metric}: expected HxW or HxWxC images, got shape {a.shape}")
    return a, b


def require_min_side(img: np.ndarray, side: int, metric: str, why: str) -> None:
    """Refuse an image whose shorter side is below ``side`` pixels (``why``: what needs that many)."""
    h, w = img.shape[:2]
    if min(h, w) < side:
        raise DataError(f"{metric}: a {h}x{w} (HxW) image is too small; {why} needs at least "
                        f"{side}x{side} pixels")


def require_uint8(img1: np.ndarray, img2: np.ndarray, metric: str) -> None:
    """Refuse non-uint8 input for the metric variants defined on 8-bit images."""
    for img in (img1, img2):
        if img.dtype != np.uint8:
            raise DataError(
                f"{metric} is defined on uint8 images (peak 255), got dtype {img.dtype}; "
                "quantise first (clip to [0, 1], x255, round) or use the *_float variant")


def crop_border(img: np.ndarray, border: int, metric: str) -> np.ndarray:
    """Remove ``border`` pixels from each spatial edge."""
    if border < 0:
        raise DataError(f"{metric}: crop_border must be >= 0, got {border}")
    if border == 0:
        return img
    h, w = img.shape[:2]
    if 2 * border >= min(h, w):
        raise DataError(f"{metric}: crop_border={border} leaves nothing of a {h}x{w} image")
    return img[border:-border, border:-border, ...]


def rgb_to_y(img: np.ndarray, peak: float) -> np.ndarray:
    """BT.601 luma of an RGB image with values in [0, peak]; returns HxW float64 in [16, 235]*peak/255."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"Y channel needs an HxWx3 RGB image, got shape {img.shape}")
    rgb01 = img.astype(np.float64) / peak
    return (rgb01 @ _Y_WEIGHTS_RGB + 16.0) * (peak / 255.0)


def to_unit_float(img: np.ndarray) -> np.ndarray:
    """uint8 -> /255, uint16 -> /65535, float -> unchanged (float64)."""
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float64) / 65535.0
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float64)
    raise DataError(f"unsupported pixel type {img.dtype}; expected uint8, uint16 or float")


def uint8_pair(img1: np.ndarray, img2: np.ndarray, metric: str, crop: int = 0,
               y_channel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Check a uint8 pair, crop ``crop`` pixels off every border, optionally keep only Y (BT.601)."""
    a, b = check_pair(img1, img2, metric)
    require_uint8(a, b, metric)
    a, b = crop_border(a, crop, metric), crop_border(b, crop, metric)
    if y_channel:
        a, b = rgb_to_y(a, 255.0), rgb_to_y(b, 255.0)
    return a, b
