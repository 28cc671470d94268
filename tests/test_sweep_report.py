"""The sweep report on constructed per-image results: tables, verdicts, CSVs and the chart."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from hidiff.errors import DataError
from hidiff.sweep.report import axis_range, metrics_csv, write_report


def _fake_sweep(folder, values):
    """plan.json and eval/<run>/<run>/<set>/metrics.csv as the sweep runner and the test runner write them."""
    variants = []
    runs = []
    for v, per_seed in values.items():
        names = []
        for k, scores in enumerate(per_seed):
            run = f"t_{v}_s{k}"
            names.append(run)
            runs.append({"name": run, "variant": v, "seed_index": k, "manual_seed": 10 + k, "stage": "final",
                         "after": [], "config_hash": "x"})
            out = metrics_csv(folder, run, "set1").parent
            out.mkdir(parents=True)
            (folder / "eval" / run / "eval.json").write_text(json.dumps({"sets": ["set1"]}))
            lines = ["name,psnr_uint8_rgb,ssim_matlab3d,input_psnr_uint8_rgb,input_ssim_matlab3d"]
            lines += [f"im{i},{float(p)!r},{float(p) / 40!r},25.0,0.6" for i, p in enumerate(scores)]
            (out / "metrics.csv").write_text("\n".join(lines) + "\n")
        variants.append({"name": v, "label": f"label {v}", "runs": names})
    (folder / "plan.json").write_text(json.dumps({"name": "t", "baseline": "base", "seeds": [10, 11],
                                                  "nproc": 1, "variants": variants, "runs": runs}))


def test_report_tables_verdicts_and_chart(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(28.0, 1.5, size=(2, 8))
    _fake_sweep(tmp_path, {"base": base, "same": base.copy(), "better": base + 0.5 + rng.normal(0, 0.05, (2, 8))})
    files = write_report(tmp_path)
    md = files["results.md"].read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| label")}
    assert "not distinguishable" in rows["label same"] and "higher than baseline" in rows["label better"]
    assert "(baseline)" in rows["label base (baseline)"]
    assert "| blurry input | 25.00 |" in md
    with open(files["results.csv"]) as fh:
        table = list(csv.DictReader(fh))
    better = next(r for r in table if r["variant"] == "better" and r["metric"] == "psnr_uint8_rgb")
    assert float(better["ci95_low"]) < 0.5 < float(better["ci95_high"]) and better["n_seeds"] == "2"
    with open(files["per_image.csv"]) as fh:
        per_image = list(csv.DictReader(fh))
    assert len(per_image) == 3 * 2 * 8 and {"variant", "seed_index", "image", "input_psnr_uint8_rgb"} <= set(
        per_image[0])
    chart = cv2.imread(str(files["chart_set1_psnr_uint8_rgb.png"]))
    assert chart is not None and chart.shape[1] > 660 and chart.std() > 0


def test_chart_axis_starts_at_the_blurry_input_or_below_every_bar():
    assert axis_range([30.0, 31.0], [0.2, 0.3], 25.0)[::2] == (25.0, True)
    lo, hi, at_ref = axis_range([24.0, 31.0], [0.5, 0.3], 25.0)   # a variant worse than the blurry input
    assert not at_ref and lo < 23.5 and hi > 31.3
    lo, hi, at_ref = axis_range([30.0], [0.0], None)
    assert not at_ref and lo < 30.0 < hi


def test_report_needs_every_evaluation(tmp_path):
    _fake_sweep(tmp_path, {"base": np.full((2, 3), 28.0)})
    (tmp_path / "eval" / "t_base_s1" / "eval.json").unlink()
    with pytest.raises(DataError, match="t_base_s1 has no evaluation"):
        write_report(tmp_path)
