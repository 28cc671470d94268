"""Honest comparisons of sweep variants: spread over seeds and paired intervals.

A variant's score on a test set is the mean over its images, one value per seed;
its spread is the standard deviation of those per-seed means.  Against the
baseline, each image is compared with itself under the same seed index (paired
differences), and the 95 % interval of the mean difference widens with both the
choice of images and the seed-to-seed spread
(:func:`hidiff.evaluation.intervals.paired_interval`, conservative with few
seeds).  An interval that contains 0 means the data cannot tell the two
variants apart; with one seed a firm verdict says that training luck was not
measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from hidiff.errors import DataError
from hidiff.evaluation.intervals import NOT_DISTINGUISHABLE, Interval, paired_interval, seed_spread

__all__ = ["NOT_DISTINGUISHABLE", "Interval", "VariantResult", "analyse", "paired_interval", "score_matrix",
           "seed_spread"]


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
        if r["variant"] == variant and r["set"] == set_name and metric in r:
            value = float(r[metric])
            if math.isnan(value):
                raise DataError(f"variant '{variant}', set '{set_name}': {metric} of image '{r['image']}' at seed "
                                f"index {r['seed_index']} is NaN (the metric could not be computed for it); a mean "
                                f"and its interval need a value for every image, so compare another metric or "
                                f"leave this image out")
            if not math.isfinite(value):
                raise DataError(f"variant '{variant}', set '{set_name}': {metric} of image '{r['image']}' at seed "
                                f"index {r['seed_index']} is {value} (an output identical to its target gives an "
                                f"infinite PSNR); a mean and its interval need finite values, so compare another "
                                f"metric or leave this image out")
            cell[(str(r["image"]), int(r["seed_index"]))] = value
    missing = [(i, s) for i in images for s in seeds if (i, s) not in cell]
    if missing:
        i, s = missing[0]
        raise DataError(f"variant '{variant}', set '{set_name}': no {metric} for image '{i}' at seed index {s} "
                        f"({len(missing)} missing); paired comparisons need every image under every seed")
    return np.array([[cell[(i, s)] for s in seeds] for i in images])


def analyse(rows: Sequence[Mapping], variants: Sequence[str], baseline: str,
            metrics: Union[Sequence[str], Mapping[str, Sequence[str]]], *,
            level: float = 0.95) -> List[VariantResult]:
    """Every variant x set x metric: mean +- std over seeds and the paired interval against ``baseline``.

    ``metrics``: one list for every set, or ``{set: [metrics]}`` when the sets differ (test sets of other
    protocols are scored under other column names, e.g. GoPro's psnr_uint8_rgb, RealBlur's psnr_realblur_masked).
    """
    if baseline not in variants:
        raise DataError(f"baseline '{baseline}' is not among the variants {list(variants)}")
    sets = sorted({str(r["set"]) for r in rows})
    if isinstance(metrics, Mapping):
        unknown = [s for s in sets if s not in metrics]
        if unknown:
            raise DataError(f"no metrics given for test set(s) {', '.join(unknown)}; metrics name the sets "
                            f"{', '.join(map(str, metrics))}")
    seeds = sorted({int(r["seed_index"]) for r in rows})
    out: List[VariantResult] = []
    for set_name in sets:
        images = sorted({str(r["image"]) for r in rows if r["set"] == set_name})
        for metric in (metrics[set_name] if isinstance(metrics, Mapping) else metrics):
            base = score_matrix(rows, baseline, set_name, metric, images, seeds)
            for v in variants:
                m = base if v == baseline else score_matrix(rows, v, set_name, metric, images, seeds)
                mean, std = seed_spread(m)
                ci = None if v == baseline else paired_interval(m - base, level=level)
                out.append(VariantResult(v, set_name, metric, mean, std, len(seeds), len(images), ci))
    return out
