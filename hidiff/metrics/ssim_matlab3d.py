"""SSIM as MATLAB's default ``ssim(out, gt)`` computes it on an RGB uint8 image.

This is the SSIM of the GoPro/HIDE numbers in deblurring papers
(``evaluate_gopro_hide.m``).  MATLAB treats an HxWx3 array as a 3-D volume and
does not average per-channel SSIMs.  The conventions mimicked here:

- the images are converted to double; dynamic range L = 255 (uint8 class), so
  C1 = (0.01*L)^2 and C2 = (0.03*L)^2; exponents alpha = beta = gamma = 1 and
  C3 = C2/2, which reduces to the usual two-factor SSIM formula;
- local statistics come from a Gaussian filter with sigma 1.5 and filter size
  2*ceil(3*sigma)+1 = 11 along *each* of the three axes (``imgaussfilt3``), the
  colour axis included;
- padding is 'replicate' on every axis.  On the colour axis (length 3, padded by
  5 on both sides) this makes each filtered channel a fixed mix of the three
  channels, which is how it is computed below (then a separable 11x11 spatial
  filter with replicated borders);
- the result is the mean of the whole SSIM map (H x W x 3), with no valid-region
  crop.

Uncertain (not checked against a MATLAB run): that the colour axis is padded
'replicate' exactly like the spatial axes, and that no other detail (e.g. the
filter being applied in the frequency domain) changes results beyond ~1e-6.
A 2-D (gray) input follows MATLAB's 2-D path: an 11x11 Gaussian, 'replicate'.
"""
from __future__ import annotations

import cv2
import numpy as np

from hidiff.metrics._arrays import check_pair, require_uint8
from hidiff.metrics._gaussian import gaussian_window, ssim_mean

_L = 255.0
_C1 = (0.01 * _L) ** 2
_C2 = (0.03 * _L) ** 2


def _replicate_axis_mix(n: int, g: np.ndarray) -> np.ndarray:
    """(n, n) matrix M with ``filtered[c] = sum_k M[c, k] * x[k]`` for a length-n axis
    filtered by the 1-D window ``g`` with 'replicate' padding."""
    r = len(g) // 2
    m = np.zeros((n, n), dtype=np.float64)
    for c in range(n):
        for t in range(-r, r + 1):
            m[c, min(max(c + t, 0), n - 1)] += g[t + r]
    return m


def _gauss3d(x: np.ndarray, g: np.ndarray, mix: np.ndarray | None) -> np.ndarray:
    def spatial(ch: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(np.ascontiguousarray(ch), cv2.CV_64F, g, g, borderType=cv2.BORDER_REPLICATE)

    if mix is None:
        return spatial(x)
    x = x @ mix.T  # colour axis: out[..., c] = sum_k mix[c, k] * x[..., k]
    return np.stack([spatial(x[..., c]) for c in range(x.shape[2])], axis=2)


def ssim_matlab3d(img1: np.ndarray, img2: np.ndarray) -> float:
    """MATLAB ``ssim`` of two uint8 images: HxWxC as a 3-D volume, HxW as 2-D."""
    a, b = check_pair(img1, img2, "ssim_matlab3d")
    require_uint8(a, b, "ssim_matlab3d")
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        a, b = a[..., 0], b[..., 0]
    g = gaussian_window(1.5, 11)
    mix = _replicate_axis_mix(a.shape[2], g) if a.ndim == 3 else None

    def filt(x: np.ndarray) -> np.ndarray:
        return _gauss3d(x, g, mix)

    return ssim_mean(a, b, filt, _C1, _C2)
