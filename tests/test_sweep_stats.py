"""Sweep statistics on constructed data: paired intervals, seed spread, paired matrices."""
from __future__ import annotations

import numpy as np
import pytest

from hidiff.errors import DataError
from hidiff.sweep.stats import NOT_DISTINGUISHABLE, analyse, paired_interval, score_matrix, seed_spread


def test_interval_contains_a_known_shift_and_excludes_zero():
    rng = np.random.default_rng(1)
    diff = 0.5 + rng.normal(0.0, 0.3, size=(40, 3))
    ci = paired_interval(diff)
    assert ci.low < 0.5 < ci.high
    assert ci.low > 0 and not ci.includes_zero and ci.verdict == "higher than baseline"
    assert ci.mean == pytest.approx(diff.mean()) and (ci.n_images, ci.n_seeds) == (40, 3)
    assert paired_interval(-diff).verdict == "lower than baseline"


def test_identical_variants_are_not_distinguishable():
    ci = paired_interval(np.zeros((10, 2)))
    assert (ci.low, ci.mean, ci.high) == (0.0, 0.0, 0.0) and ci.verdict == NOT_DISTINGUISHABLE
    rng = np.random.default_rng(2)
    a, b = rng.normal(30.0, 1.0, size=(2, 30, 3))    # two variants drawn from the same distribution
    ci = paired_interval(a - b)
    assert ci.includes_zero and ci.verdict == NOT_DISTINGUISHABLE


def test_interval_covers_the_true_mean_and_equal_variants_rarely_get_a_verdict():
    """With 2-3 seeds and a seed-to-seed spread, the percentile bootstrap gave equal variants a firm verdict
    15-39 % of the time; the t interval keeps it at the nominal 5 % or under (its df is the smaller of
    images - 1 and seeds - 1), and still finds a consistent shift."""
    rng = np.random.default_rng(3)
    trials = 600

    def firm(seeds: int, seed_sd: float, images: int = 7) -> float:
        hits = 0
        for _ in range(trials):
            sample = rng.normal(0.0, seed_sd, size=(1, seeds)) + rng.normal(0.0, 0.1, size=(images, seeds))
            hits += not paired_interval(sample).includes_zero
        return hits / trials

    for seeds in (2, 3, 5):
        for seed_sd in (0.0, 0.1, 0.3):
            assert firm(seeds, seed_sd) <= 0.075, (seeds, seed_sd)
    shifted = 0.3 + rng.normal(0.0, 0.05, size=(1, 5)) + rng.normal(0.0, 0.1, size=(20, 5))
    ci = paired_interval(shifted)
    assert ci.low < 0.3 < ci.high and ci.low > 0 and ci.verdict == "higher than baseline"
    one_seed = paired_interval(shifted[:, :1])
    assert one_seed.verdict == "higher than baseline (these runs; training luck not measured)"


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
    res = {r.variant: r for r in analyse(rows, ["base", "better", "same"], "base", ["psnr"])}
    assert res["base"].vs_baseline is None and res["base"].mean == pytest.approx(base.mean())
    assert res["better"].vs_baseline.verdict == "higher than baseline"
    assert res["better"].vs_baseline.low < 0.3 < res["better"].vs_baseline.high
    assert res["same"].vs_baseline.verdict == NOT_DISTINGUISHABLE
    with pytest.raises(DataError, match="image 'im3' at seed index 1"):
        score_matrix([r for r in rows if not (r["image"] == "im3" and r["seed_index"] == 1)], "base", "s", "psnr",
                     [f"im{i}" for i in range(20)], [0, 1, 2])
    with pytest.raises(DataError, match="NaN"):
        paired_interval(np.array([[np.nan]]))


def test_one_image_gives_no_verdict_however_many_seeds():
    """Resampling one image cannot vary the images: the interval says nothing about any other image, so a
    one-image sweep gets no 'higher'/'lower' (it did, from a zero-width interval)."""
    from hidiff.evaluation.intervals import TOO_FEW_IMAGES

    assert paired_interval(np.array([[0.01]])).verdict == TOO_FEW_IMAGES
    one = paired_interval(np.array([[0.2, 0.2]]))     # no zero-width "interval" [+0.20, +0.20]: bounds unknown
    assert one.mean == pytest.approx(0.2) and np.isnan(one.low) and np.isnan(one.high)
    assert paired_interval(np.array([[0.3, 0.5, 0.4]])).verdict == TOO_FEW_IMAGES
    assert paired_interval(np.full((4, 3), 0.5)).verdict == "higher than baseline"  # 4 images, all +0.5


def test_an_infinite_score_is_refused_by_name():
    """An output identical to its target has PSNR inf in metrics.csv; the report crashed with a bare KeyError."""
    values = np.full((2, 2), 30.0)
    rows = _rows("a", values)
    rows[3]["psnr"] = float("inf")
    with pytest.raises(DataError, match="psnr of image 'im1' at seed index 1 is inf"):
        score_matrix(rows, "a", "s", "psnr", ["im0", "im1"], [0, 1])


def test_analyse_takes_the_metrics_of_each_set():
    """Sets of two protocols are scored under other columns: each set is compared on its own metrics."""
    rng = np.random.default_rng(6)
    base = rng.normal(28.0, 1.0, size=(5, 2))
    rows = _rows("base", base) + _rows("other", base + 0.2)
    rows += [{**{k: v for k, v in r.items() if k != "psnr"}, "set": "t", "psnr_masked": r["psnr"] + 1}
             for r in rows]                         # a second set, scored under another column
    res = analyse(rows, ["base", "other"], "base", {"s": ["psnr"], "t": ["psnr_masked"]})
    assert sorted((r.set, r.metric, r.variant) for r in res) == [("s", "psnr", "base"), ("s", "psnr", "other"),
                                                                 ("t", "psnr_masked", "base"),
                                                                 ("t", "psnr_masked", "other")]
    other_t = next(r for r in res if r.set == "t" and r.variant == "other")
    assert other_t.mean == pytest.approx(base.mean() + 1.2) and other_t.vs_baseline.mean == pytest.approx(0.2)
    with pytest.raises(DataError, match="no metrics given for test set"):
        analyse(rows, ["base", "other"], "base", {"s": ["psnr"]})
