"""The best checkpoint follows each metric's direction: lower is better for errors (mae, lpips_*)."""
from __future__ import annotations

import pytest
import yaml

from engine_tiny_run import tiny_options
from hidiff.config.load import options_from_text
from hidiff.engine.best import update_best
from hidiff.metrics import LOWER_IS_BETTER, VARIANTS


def _val(tmp_path, metrics: dict, key: str):
    opts = tiny_options(tmp_path, with_val=True, val={"metrics": metrics, "key_metric": key})
    return options_from_text(yaml.safe_dump(opts, sort_keys=False)).val


def test_each_metric_defaults_to_its_own_direction(tmp_path):
    metrics = {name: {"type": name} for name in VARIANTS}
    metrics["psnr_by_basicsr_name"] = {"type": "calculate_psnr"}
    metrics["mae_said_higher"] = {"type": "mae", "better": "higher"}  # said explicitly: kept
    val = _val(tmp_path, metrics, "mae")
    got = {name: m.better for name, m in val.metrics.items()}
    assert got == {**{n: "lower" if n in LOWER_IS_BETTER else "higher" for n in VARIANTS},
                   "psnr": "higher", "psnr_by_basicsr_name": "higher", "mae_said_higher": "higher"}
    assert LOWER_IS_BETTER == {"mae", "lpips_alex", "lpips_vgg"}


@pytest.mark.parametrize("key, values, best_iter", [("mae", (0.43, 0.41, 0.50), 2), ("psnr", (20.0, 22.0, 21.0), 2)])
def test_the_key_metric_improves_in_its_own_direction(tmp_path, key, values, best_iter):
    # before, mae's default direction was "higher": the run's worst mae (0.50 at iteration 3) was saved as best
    val = _val(tmp_path, {"psnr": {"type": "psnr_uint8"}, "mae": {"type": "mae"}}, key)
    best, improved = {}, []
    for it, v in enumerate(values, start=1):
        improved.append(update_best(best, {"tinyval": {key: v, "images": 2}}, it, val))
    assert best[f"tinyval/{key}"] == {"value": values[best_iter - 1], "iter": best_iter}
    assert improved == [it <= best_iter for it in range(1, len(values) + 1)]
