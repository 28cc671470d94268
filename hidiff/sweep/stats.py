"""Honest comparisons of sweep variants: spread over seeds and paired bootstrap intervals.

A variant's score on a test set is the mean over its images, one value per seed;
its spread is the standard deviation of those per-seed means.  Against the
baseline, each image is compared with itself under the same seed index (paired
differences), and the 95 % interval of the mean difference comes from a seeded
bootstrap that resamples images and seeds independently, so both sources of
variation widen it.  An interval that contains 0 means the data cannot tell the
two variants apart.  Resampling both factors is conservative when seeds do not
matter (the per-cell noise counts twice); with only a few seeds and a large
seed-to-seed spread it is somewhat too narrow, as any interval from 3 seeds is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from hidiff.errors import DataError

NOT_DISTINGUISHABLE = "not distinguishable"


@dataclass(frozen=True)
class Interval:
    """Mean paired difference (variant - baseline) and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    level: float
    n_images: int
    n_seeds: int

    @property
    def includes_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    @property
    def verdict(self) -> str:
        if self.includes_zero:
            return NOT_DISTINGUISHABLE
        return "higher than baseline" if self.mean > 0 else "lower than baseline"


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


@dataclass(frozen=True)
class VariantResult:
    """One variant on one test set for one metric."""

    variant: str
    set: str
    metric: str
    mean: float
    std: float
    n_seeds: int
    n_images: int
    vs_baseline: Optional[Interval]     # None for the baseline itself


def score_matrix(rows: Iterable[Mapping], variant: str, set_name: str, metric: str,
                 images: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
    """images x seeds array of ``metric`` for one variant and set; every cell must be present."""
    cell: Dict[Tuple[str, int], float] = {}
    for r in rows:
        if r["variant"] == variant and r["set"] == set_name:
            cell[(str(r["image"]), int(r["seed_index"]))] = float(r[metric])
    missing = [(i, s) for i in images for s in seeds if (i, s) not in cell]
    if missing:
        i, s = missing[0]
        raise DataError(f"variant '{variant}', set '{set_name}': no {metric} for image '{i}' at seed index {s} "
                        f"({len(missing)} missing); paired comparisons need every image under every seed")
    return np.array([[cell[(i, s)] for s in seeds] for i in images])


def analyse(rows: Sequence[Mapping], variants: Sequence[str], baseline: str, metrics: Sequence[str], *,
            resamples: int = 10000, seed: int = 0, level: float = 0.95) -> List[VariantResult]:
    """Every variant x set x metric: mean +- std over seeds and the paired interval against ``baseline``."""
    if baseline not in variants:
        raise DataError(f"baseline '{baseline}' is not among the variants {list(variants)}")
    sets = sorted({str(r["set"]) for r in rows})
    seeds = sorted({int(r["seed_index"]) for r in rows})
    out: List[VariantResult] = []
    for set_name in sets:
        images = sorted({str(r["image"]) for r in rows if r["set"] == set_name})
        for metric in metrics:
            base = score_matrix(rows, baseline, set_name, metric, images, seeds)
            for v in variants:
                m = base if v == baseline else score_matrix(rows, v, set_name, metric, images, seeds)
                mean, std = seed_spread(m)
                ci = None if v == baseline else paired_bootstrap(m - base, resamples=resamples, seed=seed,
                                                                 level=level)
                out.append(VariantResult(v, set_name, metric, mean, std, len(seeds), len(images), ci))
    return out
