"""The RealBlur evaluation protocol (Rim et al.; the ``evaluate_realblur.py`` of Restormer/HI-Diff).

RealBlur ground truth is not pixel-aligned with what a network can produce, so a
result ``z`` is first aligned to the ground truth ``x`` (both RGB float in [0, 1]):

1. intensity match: ``z_s = (sum x*z / sum z*z) * z`` (one least-squares scalar);
2. ECC registration (``cv2.findTransformECC``) of gray(z_s) to gray(x): HOMOGRAPHY,
   start at the identity, 100 iterations with eps 0, gaussFiltSize 5;
3. ``z_r`` = z_s warped onto x (cubic, inverse map, reflected border); mask ``c_r`` =
   the warp of an all-ones image (nearest, constant 0 border); ``z_r *= c_r``,
   ``x_r = x * c_r``;
4. PSNR = 10 log10(1 / (sum (x_r - z_r)^2 / sum c_r)) in float64 (MSE inside the mask);
5. SSIM: skimage SSIM map of (x_r, z_r) with an 11-tap Gaussian (sigma 1.5),
   population covariance, data range 1; map * c_r, 5 px cropped from every border,
   per channel sum(map) / sum(c_r), then the channel mean.

Differences from the official script, all on purpose: an ECC failure (OpenCV's
"not converged" error, a non-finite warp, or a warp leaving no overlap) does not
crash the run; the image is scored *unaligned* (identity warp, full mask, still
intensity matched) and flagged ``ecc_converged = False``.  The intensity match
stays in float32 as in the official script: ECC is sensitive enough that a float64
factor (1e-7 away) can move the warp and the score on textured images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from hidiff.errors import DataError
from hidiff.metrics._arrays import to_unit_float

ECC_ITERATIONS = 100
ECC_GAUSS_FILT_SIZE = 5
SSIM_CROP = 5


@dataclass
class Alignment:
    """Aligned result, masked ground truth, mask and how the registration went."""

    aligned: np.ndarray   # z_r, HxWx3 float32, zero outside the mask
    reference: np.ndarray  # x_r, HxWx3 float32, zero outside the mask
    mask: np.ndarray      # c_r, HxWx3 float32 in {0, 1}
    warp: np.ndarray      # 3x3 homography (identity when not converged)
    converged: bool
    cc: float             # final ECC correlation coefficient (nan when not converged)
    scale: float          # intensity-match factor
    message: str = ""


def intensity_match(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, float]:
    """``pred`` scaled by the least-squares factor ``sum(gt*pred) / sum(pred*pred)``.

    float32 throughout, operation for operation as the official
    ``(np.sum(x*z) / np.sum(z*z)) * z``, so the same inputs give the same bits.
    """
    z = pred.astype(np.float32, copy=False)
    x = gt.astype(np.float32, copy=False)
    den = np.sum(z * z)
    scale = np.sum(x * z) / den if den > 0 else np.float32(1.0)
    return scale * z, float(scale)


def ecc_homography(template: np.ndarray, moving: np.ndarray, iterations: int = ECC_ITERATIONS,
                   gauss_filt_size: int = ECC_GAUSS_FILT_SIZE) -> tuple[np.ndarray, float]:
    """ECC homography mapping ``template`` pixel coordinates into ``moving`` (gray float32).

    Raises ``cv2.error`` when OpenCV reports non-convergence.
    """
    warp = np.eye(3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(iterations), 0.0)
    cc, warp = cv2.findTransformECC(template, moving, warp, cv2.MOTION_HOMOGRAPHY, criteria,
                                    None, int(gauss_filt_size))
    return warp, float(cc)


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2GRAY)


def align(pred: np.ndarray, gt: np.ndarray, iterations: int = ECC_ITERATIONS,
          gauss_filt_size: int = ECC_GAUSS_FILT_SIZE) -> Alignment:
    """Steps 1-3 of the protocol for float32 RGB images in [0, 1] of the same shape."""
    h, w = gt.shape[:2]
    z_s, scale = intensity_match(pred, gt)
    x = gt.astype(np.float32)
    warp, cc, message = np.eye(3, dtype=np.float32), math.nan, ""
    try:
        warp, cc = ecc_homography(_gray(x), _gray(z_s), iterations, gauss_filt_size)
        converged = bool(np.all(np.isfinite(warp)))
        message = "" if converged else "ECC returned a non-finite warp"
    except cv2.error as exc:
        converged, message = False, f"ECC did not converge: {str(exc).strip().splitlines()[-1]}"
    if converged:
        z_r = cv2.warpPerspective(z_s, warp, (w, h), flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REFLECT)
        mask = cv2.warpPerspective(np.ones_like(z_s), warp, (w, h),
                                   flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        inner = mask[SSIM_CROP:h - SSIM_CROP, SSIM_CROP:w - SSIM_CROP]
        if not np.all(inner.sum(axis=(0, 1)) > 0):
            converged, message = False, "ECC warp leaves no overlap with the ground truth"
    if not converged:
        warp, cc = np.eye(3, dtype=np.float32), math.nan
        z_r, mask = z_s, np.ones_like(z_s)
    return Alignment(z_r * mask, x * mask, mask, warp, converged, cc, scale, message)


def masked_psnr(reference: np.ndarray, aligned: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (peak 1) of the per-element MSE inside ``mask``, in float64."""
    err = float(np.sum((reference.astype(np.float64) - aligned.astype(np.float64)) ** 2))
    mse = err / float(np.sum(mask, dtype=np.float64))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def masked_ssim(reference: np.ndarray, aligned: np.ndarray, mask: np.ndarray, crop: int = SSIM_CROP) -> float:
    """Gaussian-window skimage SSIM map, masked, border-cropped, normalised by the mask."""
    _, smap = structural_similarity(reference, aligned, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, full=True)
    h, w = mask.shape[:2]
    smap = (smap * mask)[crop:h - crop, crop:w - crop]
    m = mask[crop:h - crop, crop:w - crop]
    per_channel = smap.sum(axis=(0, 1), dtype=np.float64) / m.sum(axis=(0, 1), dtype=np.float64)
    return float(np.mean(per_channel))


def score_realblur(pred: np.ndarray, gt: np.ndarray, iterations: int = ECC_ITERATIONS,
                   gauss_filt_size: int = ECC_GAUSS_FILT_SIZE) -> dict[str, float | bool]:
    """Protocol scores of one pair (HxWx3 uint8/uint16/float RGB); see the module docstring."""
    p, g = np.asarray(pred), np.asarray(gt)
    if p.shape != g.shape or p.ndim != 3 or p.shape[2] != 3:
        raise DataError(f"RealBlur protocol needs two HxWx3 images of equal size, got {p.shape} and {g.shape}")
    if min(p.shape[:2]) < 2 * SSIM_CROP + 11:
        raise DataError(f"RealBlur protocol needs images of at least {2 * SSIM_CROP + 11} px, got {p.shape[:2]}")
    al = align(to_unit_float(p).astype(np.float32), to_unit_float(g).astype(np.float32), iterations,
               gauss_filt_size)
    return {
        "psnr_realblur_masked": masked_psnr(al.reference, al.aligned, al.mask),
        "ssim_realblur_masked": masked_ssim(al.reference, al.aligned, al.mask),
        "ecc_converged": al.converged,
        "ecc_cc": al.cc,
        "intensity_scale": al.scale,
    }
