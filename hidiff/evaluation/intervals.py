"""Intervals of score differences between restoration methods, over test images and training runs.

A method's scores form an images x runs array (one column per training seed; one column for a method without
training, such as the blurry input or a deconvolution).  Differences are taken image by image, so the spread
of difficulty between images, which both methods share, cancels.  Two sources of doubt are estimated apart
(docs/default_model.md, "How the comparison is made"):

* **which images**: the variance of the per-image differences (averaged over runs) over n, with n - 1
  degrees of freedom;
* **which training run**: the variance of the per-run mean scores, with (runs - 1) degrees of freedom.

The interval is the mean difference +- t times the square root of their sum, with Student's t at the
smaller of the two degrees of freedom: conservative by construction.  In simulations of equal methods
(7-20 images, 2-5 runs, run-to-run spread 0-0.3 dB) it gives a firm verdict to at most 5.5 % of them
(tests/test_intervals.py), where the percentile bootstrap used before (until 2026-11-27) gave one to 15-39 %
when training luck mattered.  An interval that holds 0 reads "not distinguishable"; one image gives no
verdict ("too few images to tell"; :func:`paired_interval` gives it NaN bounds, not a zero-width interval);
when no trained method has a second run, training luck cannot be measured, and a firm verdict says so.

* :func:`paired_interval`: sweeps, where the variant and the baseline share seeds (run j of both was trained
  with seed j), so the per-seed differences are the runs;
* :func:`two_arm_interval`: two methods with their own runs (3 seeds of an ablation against the default
  model's one), the run spread pooled over the two compared methods only (those of the two that are trained
  and have two runs or more): a table of several comparisons (``shake_benchmark.compare``) computes each
  pair's interval from that pair's runs, not from every row of the table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np
from scipy import stats

from hidiff.errors import DataError

NOT_DISTINGUISHABLE = "not distinguishable"
#: one image: nothing is known about any other image
TOO_FEW_IMAGES = "too few images to tell"
#: the caveat of a firm verdict between trained methods when no method has a second run
ONE_RUN_CAVEAT = "these runs; training luck not measured"


@dataclass(frozen=True)
class Interval:
    """Mean difference (variant - baseline) and its confidence interval."""

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


def _scores(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise DataError(f"{name}: expected a non-empty images x runs array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{name}: the scores contain NaN or infinity")
    return a


def _check_level(name: str, level: float) -> None:
    if not 0.0 < level < 1.0:
        raise DataError(f"{name}: level must be in (0, 1), got {level}")


def _interval(mean: float, v_images: float, df: int, v_runs: float, level: float) -> Tuple[float, float]:
    half = float(stats.t.ppf(0.5 + level / 2.0, df)) * math.sqrt(v_images + v_runs)
    return mean - half, mean + half


def paired_interval(diff: np.ndarray, *, level: float = 0.95) -> Interval:
    """Interval of the mean of an images x seeds array of paired differences (variant - baseline).

    One image: the bounds are NaN, not the mean (a zero-width interval would claim certainty about the images
    that were not scored).
    """
    d = _scores("paired_interval", diff)
    _check_level("paired_interval", level)
    n, s = d.shape
    mean = float(d.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, level, n, s)
    per_image = d.mean(axis=1)
    v_images, df = float(per_image.var(ddof=1)) / n, n - 1
    v_runs, caveat = 0.0, ""
    if s > 1:
        v_runs, df = float(d.mean(axis=0).var(ddof=1)) / s, min(df, s - 1)
    else:
        caveat = ONE_RUN_CAVEAT
    low, high = _interval(mean, v_images, df, v_runs, level)
    return Interval(mean, low, high, level, n, s, caveat)


def two_arm_interval(variant: np.ndarray, baseline: np.ndarray, *, variant_trained: bool = True,
                     baseline_trained: bool = True, level: float = 0.95) -> Interval:
    """Interval of mean(variant) - mean(baseline); ``variant`` is images x a runs, ``baseline`` images x b.

    ``*_trained``: whether a method's score depends on a training run (a model) or not (the blurry input, a
    deconvolution); only trained methods carry training luck.  The run spread is pooled over these two arms
    alone (each trained arm with two runs or more), whatever other methods a table compares.
    """
    a = _scores("two_arm_interval: variant", variant)
    b = _scores("two_arm_interval: baseline", baseline)
    if a.shape[0] != b.shape[0]:
        raise DataError(f"two_arm_interval: variant has {a.shape[0]} images, baseline {b.shape[0]}; "
                        "both must be scored on the same images")
    _check_level("two_arm_interval", level)
    n = a.shape[0]
    per_image = a.mean(axis=1) - b.mean(axis=1)
    mean = float(per_image.mean())
    runs = min(a.shape[1] if variant_trained else b.shape[1], b.shape[1] if baseline_trained else a.shape[1])
    if n < 2:
        return Interval(mean, math.nan, math.nan, level, n, runs)  # as paired_interval: no zero-width interval
    v_images, df = float(per_image.var(ddof=1)) / n, n - 1
    squares, df_runs = 0.0, 0
    for arm, trained in ((a, variant_trained), (b, baseline_trained)):
        run_means = arm.mean(axis=0)
        if trained and run_means.size > 1:
            squares += float(((run_means - run_means.mean()) ** 2).sum())
            df_runs += run_means.size - 1
    v_runs, caveat = 0.0, ""
    if df_runs:
        weight = (1.0 / a.shape[1] if variant_trained else 0.0) + (1.0 / b.shape[1] if baseline_trained else 0.0)
        v_runs, df = squares / df_runs * weight, min(df, df_runs)
    elif variant_trained or baseline_trained:
        caveat = ONE_RUN_CAVEAT
    low, high = _interval(mean, v_images, df, v_runs, level)
    return Interval(mean, low, high, level, n, runs, caveat)
