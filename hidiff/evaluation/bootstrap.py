"""Bootstrap intervals of score differences between restoration methods (images x training seeds).

A method's score is an images x seeds array (one column per training seed,
or one column for a method without seeds).  Differences are taken image by
image, so the spread between images that both methods share cancels; the
seeded bootstrap resamples images and seeds with replacement, so both the
choice of test images and the luck of a training run widen the interval.  An
interval that contains 0 means the data cannot tell the two apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from hidiff.errors import DataError

NOT_DISTINGUISHABLE = "not distinguishable"
#: one image: resampling cannot vary the images, so the interval says nothing about other images
TOO_FEW_IMAGES = "too few images to tell"


@dataclass(frozen=True)
class Interval:
    """Mean paired difference (variant - baseline) and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    level: float
    n_images: int
    n_seeds: int
    #: what a firm verdict does not cover, said beside it (e.g. training luck that one run cannot measure)
    caveat: str = ""

    @property
    def includes_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    @property
    def verdict(self) -> str:
        if self.n_images < 2:
            return TOO_FEW_IMAGES
        if self.includes_zero:
            return NOT_DISTINGUISHABLE
        side = "higher than baseline" if self.mean > 0 else "lower than baseline"
        return f"{side} ({self.caveat})" if self.caveat else side


def seed_spread(values: np.ndarray) -> Tuple[float, float]:
    """Mean and standard deviation (ddof 1; NaN for one seed: unknown) of the per-seed means of images x seeds."""
    per_seed = np.asarray(values, dtype=np.float64).mean(axis=0)
    std = float(per_seed.std(ddof=1)) if per_seed.size > 1 else float("nan")
    return float(per_seed.mean()), std


def paired_bootstrap(diff: np.ndarray, *, resamples: int = 10000, seed: int = 0, level: float = 0.95,
                     chunk: int = 1000) -> Interval:
    """Percentile bootstrap interval of the mean of an images x seeds array of paired differences.

    Each resample draws images and seeds with replacement (independently) and
    averages the differences over the drawn rows and columns.
    """
    d = np.asarray(diff, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise DataError(f"paired_bootstrap: expected a non-empty images x seeds array, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise DataError("paired_bootstrap: the differences contain NaN or infinity")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise DataError(f"paired_bootstrap: resamples must be >= 1 and level in (0, 1), got {resamples}, {level}")
    n_img, n_seed = d.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        rows = rng.multinomial(n_img, np.full(n_img, 1.0 / n_img), size=b).astype(np.float64)
        cols = rng.multinomial(n_seed, np.full(n_seed, 1.0 / n_seed), size=b).astype(np.float64)
        means[start:start + b] = ((rows @ d) * cols).sum(axis=1) / (n_img * n_seed)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(float(d.mean()), float(low), float(high), level, n_img, n_seed)
