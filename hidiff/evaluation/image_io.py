"""Reading result and ground-truth images for scoring, keeping their bit depth.

Metrics defined on 8-bit images must see the exact stored uint8 values, and DPDD
ground truth is 16-bit, so images are returned as HxWx3 RGB ``uint8`` or ``uint16``
arrays, never rescaled.  Gray images are repeated to 3 channels; images with alpha
are refused (which colour would be scored is ambiguous).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from hidiff.errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def is_image_name(name: str) -> bool:
    """True if ``name`` has an image extension (case-insensitive) and is not hidden."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def read_rgb(path: PathLike) -> np.ndarray:
    """HxWx3 RGB uint8/uint16 array of an image file; DataError names the file on failure."""
    p = Path(path)
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read image '{p}': {exc.strerror or exc}") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DataError(f"cannot decode image '{p}' (empty, truncated or not an image)")
    if img.dtype not in (np.uint8, np.uint16):
        raise DataError(f"image '{p}': unsupported pixel type {img.dtype} (expected 8 or 16 bit)")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if img.shape[2] == 3:
        return np.ascontiguousarray(img[:, :, ::-1])
    raise DataError(f"image '{p}' has {img.shape[2]} channels; expected gray or RGB (no alpha)")
