"""Random camera-shake kernels after Boracchi & Foi (IEEE TIP 2012), and blurring with them.

No package synthesises realistic motion blur (they offer straight lines), so the
generator is written here, numpy only, as described in
docs/architecture.md 3.2:

* the camera path is a 2-D random walk of ``num_steps`` (2000) steps whose
  velocity has a fixed length (inertia).  Each step adds Gaussian jitter, a
  centripetal pull toward the origin and, rarely, an impulsive "big shake" that
  roughly reverses the direction; the jitter and the pull are scaled by the
  *anxiety* of the hand;
* per kernel: anxiety ~ U(0, 0.005), centripetal ~ 0.7·U, big-shake
  probability ~ 0.2·U (per step, times the anxiety), jitter ~ 10·U, path length
  ~ U(10, 1.8·size) pixels (so a canvas is at least 7x7: ``MIN_KERNEL_SIZE``),
  exposure ∈ {0.25, 0.5, 1};
* the PSF is the bilinearly splatted histogram of the first ``exposure``
  fraction of the path, shifted so its centroid is the centre pixel, shrunk to
  fit the ``size`` x ``size`` canvas if needed, and normalised to sum 1.

A centred kernel means the blurry image is not shifted against the sharp one.
Every draw comes from the generator passed in, so a kernel is a pure function of
its seed.
"""
from __future__ import annotations

import cmath
import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from hidiff.data.image_io import float_to_uint8

EXPOSURES = (0.25, 0.5, 1.0)
NUM_STEPS = 2000
#: shortest path a kernel is drawn with, in pixels: the length is uniform in [MIN_LENGTH, 1.8·size]
MIN_LENGTH = 10.0
#: the smallest canvas the generator can draw on: 1.8·size must reach MIN_LENGTH (1.8·5 = 9 does not)
MIN_KERNEL_SIZE = 7

NoiseRange = Union[float, Sequence[float]]


@dataclass(frozen=True)
class ShakeParams:
    """The random parameters of one kernel (recorded in synthetic-set manifests)."""

    anxiety: float
    centripetal: float
    big_shake_prob: float
    gaussian_shake: float
    length: float
    exposure: float
    init_angle: float
    big_shakes: int

    def as_dict(self) -> dict:
        return asdict(self)


def _odd_side(size: int, minimum: int, reason: str = "") -> int:
    """``size`` if it is an odd integer of at least ``minimum``, else ValueError (``reason`` says why)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < minimum or size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= {minimum}, got {size!r}{reason}")
    return size


def check_kernel_size(size: int) -> int:
    """``size`` if a random kernel can be drawn on a ``size`` x ``size`` canvas: odd and at least
    :data:`MIN_KERNEL_SIZE` (the path length is drawn in [10, 1.8·size] pixels, empty below 7)."""
    return _odd_side(size, MIN_KERNEL_SIZE, f" (the camera-shake path is {MIN_LENGTH:g} to 1.8 x kernel_size "
                                            f"pixels long, so smaller canvases cannot be drawn)")


def random_trajectory(rng: np.random.Generator, size: int,
                      num_steps: int = NUM_STEPS) -> tuple[np.ndarray, ShakeParams]:
    """A random camera path (complex array of ``num_steps`` positions, in pixels) and its parameters."""
    check_kernel_size(size)
    anxiety = float(rng.uniform(0.0, 0.005))
    centripetal = 0.7 * float(rng.uniform())
    big_shake_prob = 0.2 * float(rng.uniform())
    gaussian_shake = 10.0 * float(rng.uniform())
    length = float(rng.uniform(MIN_LENGTH, 1.8 * size))
    exposure = EXPOSURES[int(rng.integers(0, len(EXPOSURES)))]
    init_angle = float(rng.uniform(0.0, 2.0 * math.pi))
    u_big = rng.random(num_steps - 1).tolist()
    u_turn = rng.random(num_steps - 1).tolist()
    jitter = rng.standard_normal((num_steps - 1, 2)).tolist()

    step = length / (num_steps - 1)
    v = cmath.rect(step, init_angle)
    x = 0j
    path = [x]
    big_shakes = 0
    p_big = big_shake_prob * anxiety
    for t in range(num_steps - 1):
        if u_big[t] < p_big:
            kick = 2.0 * v * cmath.exp(1j * (math.pi + u_turn[t] - 0.5))
            big_shakes += 1
        else:
            kick = 0j
        dv = kick + anxiety * (gaussian_shake * complex(jitter[t][0], jitter[t][1]) - centripetal * x) * step
        nv = v + dv
        if abs(nv) > 0:
            v = nv / abs(nv) * step
        x = x + v
        path.append(x)
    params = ShakeParams(anxiety, centripetal, big_shake_prob, gaussian_shake, length, exposure,
                         init_angle, big_shakes)
    return np.asarray(path, dtype=np.complex128), params


def trajectory_to_psf(path: np.ndarray, size: int, exposure: float = 1.0) -> np.ndarray:
    """Sub-pixel histogram of the first ``exposure`` fraction of ``path`` on a size x size grid.

    The points are centred on their mean (so the PSF centroid is the centre
    pixel: bilinear splatting preserves the first moment) and uniformly shrunk
    if they would leave the canvas.  Returns float64 summing to 1.
    """
    _odd_side(size, 3)  # bilinear splatting around a centre pixel
    n = max(2, int(round(exposure * len(path))))
    pts = path[:n]
    xs = pts.real - pts.real.mean()
    ys = pts.imag - pts.imag.mean()
    c = (size - 1) / 2.0
    reach = max(float(np.abs(xs).max()), float(np.abs(ys).max()))
    if reach > c:
        xs, ys = xs * (c / reach), ys * (c / reach)
    xs = np.clip(xs + c, 0.0, size - 1.0)
    ys = np.clip(ys + c, 0.0, size - 1.0)
    x0 = np.minimum(np.floor(xs), size - 2).astype(np.int64)
    y0 = np.minimum(np.floor(ys), size - 2).astype(np.int64)
    fx, fy = xs - x0, ys - y0
    psf = np.zeros((size, size), dtype=np.float64)
    np.add.at(psf, (y0, x0), (1 - fy) * (1 - fx))
    np.add.at(psf, (y0, x0 + 1), (1 - fy) * fx)
    np.add.at(psf, (y0 + 1, x0), fy * (1 - fx))
    np.add.at(psf, (y0 + 1, x0 + 1), fy * fx)
    return psf / psf.sum()


def random_kernel(size: int, rng: np.random.Generator) -> tuple[np.ndarray, ShakeParams]:
    """A random camera-shake PSF (size x size, float64, sum 1, centred) and its parameters."""
    path, params = random_trajectory(rng, size)
    return trajectory_to_psf(path, size, params.exposure), params


def check_min_kernel_size(min_size: Optional[int], size: int) -> Optional[int]:
    """``None`` or an odd canvas side in [:data:`MIN_KERNEL_SIZE`, ``size``]."""
    if min_size is None:
        return None
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < MIN_KERNEL_SIZE \
            or min_size % 2 == 0 or min_size > size:
        raise ValueError(f"kernel_size_min must be an odd integer in [{MIN_KERNEL_SIZE}, kernel_size={size}] "
                         f"or null, got {min_size!r} (the camera-shake generator cannot draw a canvas smaller "
                         f"than {MIN_KERNEL_SIZE}x{MIN_KERNEL_SIZE})")
    return min_size


def random_canvas_kernel(size: int, min_size: Optional[int],
                         rng: np.random.Generator) -> tuple[np.ndarray, ShakeParams]:
    """A kernel drawn on an odd canvas uniform in [``min_size``, ``size``], zero-padded to size x size.

    The trajectory's length scales with its canvas, so small canvases give short
    shakes; padding keeps every kernel (and the region it blurs) one size and
    centred.  ``min_size`` None or equal to ``size``: :func:`random_kernel`, no
    extra draw.
    """
    check_kernel_size(size)
    check_min_kernel_size(min_size, size)
    if min_size is None or min_size == size:
        return random_kernel(size, rng)
    canvas = min_size + 2 * int(rng.integers(0, (size - min_size) // 2 + 1))
    kernel, params = random_kernel(canvas, rng)
    pad = (size - canvas) // 2
    return np.pad(kernel, pad), params


def _as_float(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    return arr.astype(np.float64)


def convolve_valid(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'valid' 2-D convolution of every channel: (H, W) -> (H - k + 1, W - k + 1), float64.

    Only output pixels whose whole kernel footprint lies inside ``img`` are kept,
    so there are no border artefacts.
    """
    k = np.asarray(kernel, dtype=np.float64)
    kh, kw = k.shape
    src = _as_float(img)
    h, w = src.shape[:2]
    if h < kh or w < kw:
        raise ValueError(f"image of {h}x{w} is smaller than the {kh}x{kw} kernel")
    # filter2D correlates; flipping the kernel makes it a convolution.
    full = cv2.filter2D(src, cv2.CV_64F, np.ascontiguousarray(k[::-1, ::-1]), borderType=cv2.BORDER_REFLECT)
    if full.ndim == 2 and src.ndim == 3:
        full = full[:, :, None]
    ry, rx = kh // 2, kw // 2
    return full[ry:h - (kh - 1 - ry), rx:w - (kw - 1 - rx)]


def blur_image(sharp: np.ndarray, kernel: np.ndarray, rng: np.random.Generator, noise_sigma: float) -> np.ndarray:
    """Blur a sharp region, add Gaussian noise and quantise to 8 bits.

    ``sharp`` is a (crop + k - 1)² region (HxWxC, uint8/uint16 or float in
    [0, 1]); the result is the uint8 blurry crop of (H - k + 1) x (W - k + 1).
    """
    blurred = convolve_valid(sharp, kernel)
    if noise_sigma > 0:
        blurred = blurred + rng.normal(0.0, float(noise_sigma), size=blurred.shape)
    return float_to_uint8(blurred)


def noise_range(noise_sigma: NoiseRange) -> tuple[float, float]:
    """``σ`` or ``(σ_min, σ_max)`` -> ``(σ_min, σ_max)``, validated."""
    if isinstance(noise_sigma, (int, float)):
        lo = hi = float(noise_sigma)
    else:
        vals = [float(v) for v in noise_sigma]
        if len(vals) != 2:
            raise ValueError(f"noise_sigma must be a number or a [min, max] pair, got {noise_sigma!r}")
        lo, hi = vals
    if lo < 0 or hi < lo:
        raise ValueError(f"noise_sigma range must satisfy 0 <= min <= max, got {noise_sigma!r}")
    return lo, hi


@dataclass
class SyntheticPair:
    """One synthesised pair with everything needed to reproduce or invert it."""

    blurry: np.ndarray  # uint8, (H - k + 1, W - k + 1, C)
    sharp: np.ndarray  # uint8, same size
    kernel: np.ndarray  # float64, k x k, sum 1
    noise_sigma: float
    params: ShakeParams


def kernel_pool(size: int, count: int, seed: int, min_size: Optional[int] = None) -> list:
    """A fixed pool of ``count`` camera-shake kernels (a small benchmark's kernel set, like Levin's 8).

    ``min_size``: each kernel on its own canvas, as :func:`random_canvas_kernel`.
    """
    return [random_canvas_kernel(size, min_size, np.random.default_rng([int(seed), 7919, j]))
            for j in range(count)]


def synthesize_pair(sharp: np.ndarray, rng: np.random.Generator, *, kernel_size: int = 31,
                    noise_sigma: NoiseRange = (0.0, 0.02), pool: Optional[list] = None,
                    kernel_size_min: Optional[int] = None) -> SyntheticPair:
    """Draw a kernel and a noise level from ``rng`` and blur the region ``sharp``.

    The sharp target is the centre of ``sharp`` that the valid convolution covers.
    Draw order (fixed, part of the reproducibility contract): [canvas,] kernel, σ, noise.
    With ``pool`` (from :func:`kernel_pool`) the kernel is one of the pool's,
    chosen by ``rng``, instead of a fresh random trajectory.  With
    ``kernel_size_min`` a fresh kernel's canvas is drawn in [kernel_size_min,
    kernel_size] (see :func:`random_canvas_kernel`).
    """
    check_kernel_size(kernel_size)
    check_min_kernel_size(kernel_size_min, kernel_size)
    lo, hi = noise_range(noise_sigma)
    if pool:
        kernel, params = pool[int(rng.integers(len(pool)))]
    else:
        kernel, params = random_canvas_kernel(kernel_size, kernel_size_min, rng)
    sigma = float(rng.uniform(lo, hi)) if hi > lo else lo
    blurry = blur_image(sharp, kernel, rng, sigma)
    r = kernel_size // 2
    h, w = np.asarray(sharp).shape[:2]
    target = float_to_uint8(_as_float(np.asarray(sharp)[r:h - r, r:w - r]))
    return SyntheticPair(blurry, target, kernel, sigma, params)
