"""Sweep statistics on constructed data: bootstrap intervals, seed spread, paired matrices."""
from __future__ import annotations

import numpy as np
import pytest

from hidiff.errors import DataError
from hidiff.sweep.stats import NOT_DISTINGUISHABLE, analyse, paired_bootstrap, score_matrix, seed_spread


def test_interval_contains_a_known_shift_and_excludes_zero():
    rng = np.random.default_rng(1)
    diff = 0.5 + rng.normal(0.0, 0.3, size=(40, 3))
    ci = paired_bootstrap(diff, resamples=10000, seed=0)
    assert ci.low < 0.5 < ci.high
    assert ci.low > 0 and not ci.includes_zero and ci.verdict == "higher than baseline"
    assert ci.mean == pytest.approx(diff.mean()) and (ci.n_images, ci.n_seeds) == (40, 3)
    assert paired_bootstrap(-diff, seed=0).verdict == "lower than baseline"


def test_identical_variants_are_not_distinguishable():
    ci = paired_bootstrap(np.zeros((10, 2)), seed=0)
    assert (ci.low, ci.mean, ci.high) == (0.0, 0.0, 0.0) and ci.verdict == NOT_DISTINGUISHABLE
    rng = np.random.default_rng(2)
    a, b = rng.normal(30.0, 1.0, size=(2, 30, 3))    # two variants drawn from the same distribution
    ci = paired_bootstrap(a - b, seed=0)
    assert ci.includes_zero and ci.verdict == NOT_DISTINGUISHABLE


def test_interval_is_seeded_and_covers_the_true_mean():
    rng = np.random.default_rng(3)
    d = rng.normal(size=(12, 2))
    assert paired_bootstrap(d, seed=7) == paired_bootstrap(d, seed=7)
    assert paired_bootstrap(d, seed=7) != paired_bootstrap(d, seed=8)
    trials = 200

    def coverage(seed_sd: float) -> float:
        hits = 0
        for t in range(trials):
            sample = (0.2 + rng.normal(0.0, seed_sd, size=(1, 4)) + rng.normal(0.0, 0.5, size=(30, 1))
                      + rng.normal(0.0, 1.0, size=(30, 4)))     # seed effect + image effect + noise
            ci = paired_bootstrap(sample, resamples=1000, seed=t)
            hits += ci.low <= 0.2 <= ci.high
        return hits / trials

    assert coverage(0.0) >= 0.95      # resampling seeds and images is conservative without a seed effect
    assert coverage(0.3) >= 0.88      # and close to the nominal 95 % with one


def test_seed_spread_is_over_per_seed_means():
    values = np.array([[1.0, 3.0], [3.0, 5.0]])   # per-seed means 2 and 4
    assert seed_spread(values) == (3.0, pytest.approx(np.sqrt(2.0)))
    mean, std = seed_spread(np.array([[1.0], [2.0]]))
    assert mean == 1.5 and np.isnan(std)     # one seed: the spread is unknown, not 0


def _rows(variant, values):
    return [{"variant": variant, "set": "s", "image": f"im{i}", "seed_index": k, "psnr": float(values[i, k])}
            for i in range(values.shape[0]) for k in range(values.shape[1])]


def test_analyse_pairs_images_and_seeds():
    rng = np.random.default_rng(4)
    base = rng.normal(28.0, 2.0, size=(20, 3))      # large spread between images ...
    better = base + 0.3 + rng.normal(0.0, 0.05, size=base.shape)   # ... but a consistent per-image gain
    rows = _rows("base", base) + _rows("better", better) + _rows("same", base.copy())
    res = {r.variant: r for r in analyse(rows, ["base", "better", "same"], "base", ["psnr"], resamples=2000)}
    assert res["base"].vs_baseline is None and res["base"].mean == pytest.approx(base.mean())
    assert res["better"].vs_baseline.verdict == "higher than baseline"
    assert res["better"].vs_baseline.low < 0.3 < res["better"].vs_baseline.high
    assert res["same"].vs_baseline.verdict == NOT_DISTINGUISHABLE
    with pytest.raises(DataError, match="image 'im3' at seed index 1"):
        score_matrix([r for r in rows if not (r["image"] == "im3" and r["seed_index"] == 1)], "base", "s", "psnr",
                     [f"im{i}" for i in range(20)], [0, 1, 2])
    with pytest.raises(DataError, match="NaN"):
        paired_bootstrap(np.array([[np.nan]]))


def test_one_image_gives_no_verdict_however_many_seeds():
    """Resampling one image cannot vary the images: the interval says nothing about any other image, so a
    one-image sweep gets no 'higher'/'lower' (it did, from a zero-width interval)."""
    from hidiff.evaluation.bootstrap import TOO_FEW_IMAGES

    assert paired_bootstrap(np.array([[0.01]]), seed=0).verdict == TOO_FEW_IMAGES
    assert paired_bootstrap(np.array([[0.3, 0.5, 0.4]]), seed=0).verdict == TOO_FEW_IMAGES
    assert paired_bootstrap(np.full((4, 3), 0.5), seed=0).verdict == "higher than baseline"  # 4 images, all +0.5


def test_an_infinite_score_is_refused_by_name():
    """An output identical to its target has PSNR inf in metrics.csv; the report crashed with a bare KeyError."""
    values = np.full((2, 2), 30.0)
    rows = _rows("a", values)
    rows[3]["psnr"] = float("inf")
    with pytest.raises(DataError, match="psnr of image 'im1' at seed index 1 is inf"):
        score_matrix(rows, "a", "s", "psnr", ["im0", "im1"], [0, 1])
