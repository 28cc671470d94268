"""Non-blind deconvolution references: Wiener and Richardson-Lucy given the true kernel (scikit-image).

The synthetic camera-shake benchmarks (benchmarks/quality.py,
benchmarks/shake_benchmark.py) put them beside the learned models: they know the
true PSF, which a learned model never sees.  Each has one parameter (Wiener's
balance, Richardson-Lucy's iterations), tuned by mean PSNR on pairs made from
*training* photos only, so the test photos never choose it.

Wiener is a global, circular filter: at the borders of a crop blurred by an
asymmetric shake, reflect padding does not match the blur, and the seams' error
spreads over the whole image.  ``wiener_taper`` first blends the padded image
towards its own circular blur near the borders (an edge taper weighted by the
PSF's autocorrelation, as MATLAB's ``edgetaper``), which removes most of it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
from skimage import restoration

from hidiff.data.blur_kernels import synthesize_pair
from hidiff.data.image_io import float_to_uint8, list_images, read_image
from hidiff.data.sample_rng import key_rng
from hidiff.data.synthetic_dataset import sharp_region
from hidiff.metrics.psnr import psnr_uint8

METHODS = ("wiener", "wiener_taper", "richardson_lucy")
WIENER_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
RL_GRID = (3, 5, 10, 20, 40, 80)
GRIDS: Dict[str, Tuple[float, ...]] = {"wiener": WIENER_GRID, "wiener_taper": WIENER_GRID,
                                       "richardson_lucy": RL_GRID}


def _pad_reflect(img: np.ndarray, r: int) -> np.ndarray:
    return np.pad(img, ((r, r), (r, r), (0, 0)), mode="reflect")


def _otf(kernel: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """The PSF's transfer function on a ``shape`` grid, its centre at the origin (as scikit-image's Wiener)."""
    padded = np.zeros(shape)
    k = kernel.shape[0]
    padded[:k, :k] = kernel
    return np.fft.fft2(np.roll(padded, (-(k // 2), -(k // 2)), axis=(0, 1)))


def edge_taper(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``x`` (one channel) blended towards its circular blur by ``kernel`` near the borders: the weight of
    the image is 1 minus the PSF's normalised autocorrelation at the distance to each border."""
    alpha = np.ones(x.shape)
    for axis, n in enumerate(x.shape):
        proj = kernel.sum(axis=1 - axis)
        ac = np.correlate(proj, proj, mode="full")
        ac = ac / ac.max()
        k = proj.size
        beta = np.zeros(n)
        beta[:k] = ac[k - 1:]              # distances 0 .. k-1 from the first border
        beta[n - (k - 1):] += ac[:k - 1]   # and from the last
        weight = 1.0 - np.clip(beta, 0.0, 1.0)
        alpha *= weight[:, None] if axis == 0 else weight[None, :]
    blurred = np.real(np.fft.ifft2(np.fft.fft2(x) * _otf(kernel, x.shape)))
    return alpha * x + (1.0 - alpha) * blurred


def deconvolve(blurry: np.ndarray, kernel: np.ndarray, method: str, param: float) -> np.ndarray:
    """Non-blind deconvolution of a uint8 RGB image per channel (reflect-padded against border ringing)."""
    if method not in METHODS:
        raise ValueError(f"deconvolution method must be one of {METHODS}, got {method!r}")
    r = kernel.shape[0]
    x = _pad_reflect(blurry.astype(np.float64) / 255.0, r)
    out = np.empty_like(x)
    for c in range(x.shape[2]):
        if method == "wiener":
            out[..., c] = restoration.wiener(x[..., c], kernel, balance=param, clip=True)
        elif method == "wiener_taper":
            out[..., c] = restoration.wiener(edge_taper(x[..., c], kernel), kernel, balance=param, clip=True)
        else:
            out[..., c] = restoration.richardson_lucy(x[..., c], kernel, num_iter=int(param), clip=True)
    out = out[r:-r, r:-r]
    return float_to_uint8(out)


def label(method: str, param: float) -> str:
    """The table row of a tuned method."""
    if method == "wiener":
        return f"Wiener, true kernel (balance {param})"
    if method == "wiener_taper":
        return f"Wiener with edge taper, true kernel (balance {param})"
    return f"Richardson-Lucy, true kernel ({int(param)} iterations)"


def tune_on_pairs(pairs: Sequence, grids: Mapping[str, Sequence[float]] = GRIDS
                  ) -> Tuple[Dict[str, float], Dict[str, Dict[float, float]]]:
    """Per method, the grid value of best mean PSNR over ``pairs`` (ties: the first in the grid) and every
    value's mean PSNR: ``(best, scores)``.  A pair has ``blurry``, ``sharp`` and ``kernel`` (SyntheticPair)."""
    best: Dict[str, float] = {}
    scores: Dict[str, Dict[float, float]] = {}
    for method, grid in grids.items():
        scores[method] = {p: float(np.mean([psnr_uint8(deconvolve(q.blurry, q.kernel, method, p), q.sharp)
                                            for q in pairs])) for p in grid}
        best[method] = max(scores[method], key=scores[method].get)
    return best, scores


def training_pairs(paths: Sequence[Path], *, kernel_size: int, noise: Sequence[float], seed: int,
                   crop: int) -> List:
    """One synthetic pair per photo: its centred ``crop``² (smaller if the photo is), blurred as a test pair."""

    pairs = []
    for path in paths:
        photo = read_image(path)
        side = min(crop, min(photo.shape[:2]) - kernel_size + 1)
        region = sharp_region(photo, side, kernel_size, source=str(path))
        pairs.append(synthesize_pair(region, key_rng(seed, path.stem), kernel_size=kernel_size,
                                     noise_sigma=tuple(noise)))
    return pairs


def tune_classical(train_dir: Path, kernel_size: int, noise: Sequence[float], seed: int, crop: int, log: Callable,
                   photos: int = 3) -> Dict[str, float]:
    """Pick Wiener's balance and RL's iterations (best mean PSNR) once, on pairs made from *training* photos."""

    paths = list_images(train_dir)[:photos]
    best, scores = tune_on_pairs(training_pairs(paths, kernel_size=kernel_size, noise=noise, seed=seed + 7,
                                                crop=crop))
    for method in METHODS:
        log(f"  tuned {method} on {', '.join(p.name for p in paths)}: "
            + ", ".join(f"{p}: {s:.2f}" for p, s in scores[method].items()) + f" -> {best[method]}")
    return best
