"""The interval of the default model's ablation: images paired, training luck measured from the runs."""
from __future__ import annotations

import numpy as np
import pytest

from hidiff.errors import DataError
from hidiff.evaluation.intervals import NOT_DISTINGUISHABLE, ONE_RUN_CAVEAT, TOO_FEW_IMAGES, two_arm_interval


def arms(rng, runs_a, runs_b, shift=0.0, seed_sd=0.1, images=7):
    """Scores of two recipes on the same images: shared image difficulty, per-run luck, per-cell noise."""
    difficulty = rng.normal(25.0, 3.0, size=(images, 1))
    a = difficulty + shift + rng.normal(0, seed_sd, size=(1, runs_a)) + rng.normal(0, 0.1, size=(images, runs_a))
    b = difficulty + rng.normal(0, seed_sd, size=(1, runs_b)) + rng.normal(0, 0.1, size=(images, runs_b))
    return a, b


@pytest.mark.parametrize("runs", [(3, 1), (3, 3), (2, 1)])
def test_equal_recipes_get_a_firm_verdict_at_most_five_percent_of_the_time(runs):
    """3 runs against 1 of the same recipe: a percentile bootstrap said 'higher'/'lower' 19-45 % of the time."""
    rng = np.random.default_rng(0)
    for seed_sd in (0.05, 0.15, 0.3):
        firm = sum(not two_arm_interval(*arms(rng, *runs, seed_sd=seed_sd)).includes_zero for _ in range(1000))
        assert firm <= 60, (runs, seed_sd, firm)     # 5 % of 1000, with room for the simulation's own noise


def test_a_real_difference_is_found_and_the_interval_covers_it():
    rng = np.random.default_rng(1)
    a, b = arms(rng, 3, 1, shift=-1.0, seed_sd=0.1)
    ci = two_arm_interval(a, b)
    assert ci.low < -1.0 < ci.high and ci.high < 0 and ci.verdict == "lower than baseline"
    assert ci.mean == pytest.approx(a.mean() - b.mean()) and (ci.n_images, ci.n_seeds) == (7, 1)
    spread = a + np.array([[-1.5, 0.0, 1.5]])        # the same means, runs far apart: luck dominates
    wide = two_arm_interval(spread, b)
    assert wide.high - wide.low > 3 * (ci.high - ci.low) and wide.verdict == NOT_DISTINGUISHABLE


def test_one_run_each_compares_these_models_and_says_so():
    rng = np.random.default_rng(2)
    a, b = arms(rng, 1, 1, shift=2.0)
    ci = two_arm_interval(a, b)
    assert ci.verdict == f"higher than baseline ({ONE_RUN_CAVEAT})"
    fixed = two_arm_interval(a, b, baseline_trained=False, variant_trained=False)   # e.g. Wiener vs blurry
    assert fixed.verdict == "higher than baseline" and (fixed.low, fixed.high) == (ci.low, ci.high)


def test_a_fixed_method_carries_no_training_luck():
    """Against a deconvolution (no training), only the model's run spread counts, scaled by its runs alone."""
    rng = np.random.default_rng(3)
    a, b = arms(rng, 3, 1, shift=0.5, seed_sd=0.2)
    both = two_arm_interval(a, b)
    fixed = two_arm_interval(a, b, baseline_trained=False)
    assert fixed.mean == both.mean and fixed.high - fixed.low < both.high - both.low


def test_bad_input_is_named():
    with pytest.raises(DataError, match="variant has 7 images, baseline 6"):
        two_arm_interval(np.zeros((7, 3)), np.zeros((6, 1)))
    with pytest.raises(DataError, match="NaN or infinity"):
        two_arm_interval(np.zeros((7, 3)), np.full((7, 1), np.nan))
    one = two_arm_interval(np.ones((1, 3)), np.zeros((1, 1)))
    assert one.verdict == TOO_FEW_IMAGES and one.mean == 1.0
    assert np.isnan(one.low) and np.isnan(one.high)  # was [1, 1]: a zero-width interval claims certainty
    from hidiff.evaluation.shake_benchmark import markdown_comparison
    row = {"method": "A", "baseline": "B", "diff_db": 1.0, "low": one.low, "high": one.high, "runs": 3,
           "baseline_runs": 1, "images": 1, "verdict": one.verdict}
    assert "| A | 3 vs 1 | +1.00 | none (1 image) | too few images to tell |" in markdown_comparison([row])
