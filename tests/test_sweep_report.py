"""The sweep report on constructed per-image results: tables, verdicts, CSVs and the chart."""
from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pytest

from hidiff.errors import DataError
from hidiff.sweep.report import axis_range, draw_chart, metrics_csv, plan_hash, write_report


GOPRO = "name,psnr_uint8_rgb,ssim_matlab3d,input_psnr_uint8_rgb,input_ssim_matlab3d"


def _gopro_row(i, p):
    return f"im{i},{float(p)!r},{float(p) / 40!r},25.0,0.6"


def _fake_sweep(folder, values, protocol="gopro", header=GOPRO, row=_gopro_row, sets=None):
    """plan.json and eval/<run>/<run>/<set>/metrics.csv (+ summary.json) as the sweep runner and the test runner
    write them; ``values``: {variant: seeds x images}; ``sets``: {set: (protocol, header, row)}, by default one
    set 'set1' of ``protocol``."""
    sets = sets or {"set1": (protocol, header, row)}
    variants = []
    runs = []
    for v, per_seed in values.items():
        names = []
        for k, scores in enumerate(per_seed):
            run = f"t_{v}_s{k}"
            names.append(run)
            runs.append({"name": run, "variant": v, "seed_index": k, "manual_seed": 10 + k, "stage": "final",
                         "after": [], "config_hash": "x"})
            (folder / "eval" / run).mkdir(parents=True)
            (folder / "eval" / run / "eval.json").write_text(json.dumps({"sets": sorted(sets)}))
            for set_name, (set_protocol, set_header, set_row) in sets.items():
                out = metrics_csv(folder, run, set_name).parent
                out.mkdir(parents=True)
                lines = [set_header] + [set_row(i, p) for i, p in enumerate(scores)]
                (out / "metrics.csv").write_text("\n".join(lines) + "\n")
                (out / "summary.json").write_text(json.dumps({"set": set_name, "protocol": set_protocol,
                                                              "meta": {"val_metrics": {}}}))
        variants.append({"name": v, "label": f"label {v}", "runs": names})
    seeds = [10 + k for k in range(len(next(iter(values.values()))))]
    (folder / "plan.json").write_text(json.dumps({"name": "t", "baseline": "base", "seeds": seeds,
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
    # the verdicts are per-comparison intervals: the table says so, and how many comparisons it makes
    assert ("Each verdict is a per-comparison 95 % interval, not corrected for the k comparisons in this table "
            "(k = 4: 2 variants x 2 metrics against the baseline)") in md
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
    # which plan the report describes: the hash of plan.json, in results.md and in every row of results.csv
    planned = plan_hash(json.loads((tmp_path / "plan.json").read_text()))
    assert f"Plan {planned} (plan.json)" in md and {r["plan"] for r in table} == {planned}


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


def _realblur_row(i, p):
    """A RealBlur row: the protocol's two metrics, then its alignment diagnostics; ECC did not converge on im1."""
    cc = "nan" if i == 1 else "0.98"
    return f"im{i},{float(p)!r},{float(p) / 40!r},{'false' if i == 1 else 'true'},{cc},1.01"


REALBLUR = "name,psnr_realblur_masked,ssim_realblur_masked,ecc_converged,ecc_cc,intensity_scale"


def test_only_the_protocols_metrics_are_compared(tmp_path):
    """RealBlur's ecc_cc and intensity_scale got intervals and verdicts, and a NaN ecc_cc (ECC not converging)
    ended the report with a DataError calling it missing."""
    rng = np.random.default_rng(1)
    base = rng.normal(28.0, 1.5, size=(2, 4))
    _fake_sweep(tmp_path, {"base": base, "other": base + 0.1}, "realblur", REALBLUR, _realblur_row)
    files = write_report(tmp_path)
    with open(files["results.csv"]) as fh:
        metrics = {r["metric"] for r in csv.DictReader(fh)}
    assert metrics == {"psnr_realblur_masked", "ssim_realblur_masked"}
    assert "ecc_cc" not in files["results.md"].read_text()
    with open(files["per_image.csv"]) as fh:    # the diagnostics stay beside the scores
        im1 = next(r for r in csv.DictReader(fh) if r["image"] == "im1")
    assert im1["ecc_cc"] == "nan" and im1["intensity_scale"] == "1.01"


def test_a_nan_metric_is_reported_by_name_not_as_missing(tmp_path):
    _fake_sweep(tmp_path, {"base": np.full((2, 3), 28.0), "other": np.full((2, 3), 29.0)})
    path = metrics_csv(tmp_path, "t_other_s1", "set1")
    path.write_text(path.read_text().replace("im2,29.0", "im2,nan"))
    with pytest.raises(DataError, match="psnr_uint8_rgb of image 'im2' at seed index 1 is NaN") as exc:
        write_report(tmp_path)
    assert "missing" not in str(exc.value)


def test_one_image_gives_no_interval_and_one_seed_no_error_bar(tmp_path):
    """One test image showed a zero-width '95 % CI' ([+0.20, +0.20], ci95_low = ci95_high in the csv); one seed
    drew '+- 0.00' error bars in the chart."""
    _fake_sweep(tmp_path, {"base": np.array([[28.0]]), "other": np.array([[28.2]])})
    files = write_report(tmp_path)
    with open(files["results.csv"]) as fh:
        other = next(r for r in csv.DictReader(fh) if r["variant"] == "other" and r["metric"] == "psnr_uint8_rgb")
    assert (other["ci95_low"], other["ci95_high"], other["std_over_seeds"]) == ("", "", "")
    assert other["verdict"] == "too few images to tell" and float(other["diff_vs_baseline"]) == pytest.approx(0.2)
    md = files["results.md"].read_text()
    assert "+0.20 (no interval: 1 image) | too few images to tell" in md and "[+0.20, +0.20]" not in md
    chart = cv2.imdecode(np.frombuffer(files["chart_set1_psnr_uint8_rgb.png"].read_bytes(), np.uint8),
                         cv2.IMREAD_COLOR)
    labels, means = ["label base", "label other"], [28.0, 28.2]
    no_bar = draw_chart(labels, means, [math.nan, math.nan], "psnr_uint8_rgb", 25.0)
    assert np.array_equal(chart, cv2.imdecode(np.frombuffer(no_bar, np.uint8), cv2.IMREAD_COLOR))
    zero_bar = draw_chart(labels, means, [0.0, 0.0], "psnr_uint8_rgb", 25.0)
    assert no_bar != zero_bar


def _sections(md):
    """results.md split at its '## <set>' headings: {set: section text}."""
    parts = md.split("\n## ")[1:]
    return {part.split(" ", 1)[0]: part for part in parts}


def test_sets_of_two_protocols_are_each_compared_on_their_own_metrics(tmp_path):
    """A test file with GoPro and RealBlur sets (options/test_gopro.yml): the report looked for RealBlur's
    psnr_realblur_masked on the GoPro set and ended, after every run had trained, with 'no psnr_realblur_masked
    for image ... paired comparisons need every image under every seed'."""
    rng = np.random.default_rng(5)
    base = rng.normal(28.0, 1.5, size=(2, 6))
    _fake_sweep(tmp_path, {"base": base, "same": base.copy(), "better": base + 0.5 + rng.normal(0, 0.05, (2, 6))},
                sets={"gopro_set": ("gopro", GOPRO, _gopro_row),
                      "realblur_set": ("realblur", REALBLUR, _realblur_row)})
    files = write_report(tmp_path)
    with open(files["results.csv"]) as fh:
        table = list(csv.DictReader(fh))
    assert {r["metric"] for r in table if r["set"] == "gopro_set"} == {"psnr_uint8_rgb", "ssim_matlab3d"}
    assert {r["metric"] for r in table if r["set"] == "realblur_set"} == {"psnr_realblur_masked",
                                                                         "ssim_realblur_masked"}
    assert len(table) == 2 * 2 * 3      # 2 sets x 2 metrics x 3 variants
    for set_name, psnr in (("gopro_set", "psnr_uint8_rgb"), ("realblur_set", "psnr_realblur_masked")):
        better = next(r for r in table if r["set"] == set_name and r["variant"] == "better" and r["metric"] == psnr)
        assert better["verdict"] == "higher than baseline" and float(better["ci95_low"]) < 0.5 < float(
            better["ci95_high"])
    sections = _sections(files["results.md"].read_text())
    assert set(sections) == {"gopro_set", "realblur_set"}
    assert "psnr_uint8_rgb" in sections["gopro_set"] and "realblur" not in sections["gopro_set"]
    assert "psnr_realblur_masked" in sections["realblur_set"] and "uint8" not in sections["realblur_set"]
    for section in sections.values():
        assert "(k = 4: 2 variants x 2 metrics against the baseline)" in section
    # one chart per set, of its own protocol's PSNR, shown under the set's table
    assert "(chart_realblur_set_psnr_realblur_masked.png)" in sections["realblur_set"]
    assert sorted(n for n in files if n.startswith("chart_")) == ["chart_gopro_set_psnr_uint8_rgb.png",
                                                                  "chart_realblur_set_psnr_realblur_masked.png"]
    for name in ("chart_gopro_set_psnr_uint8_rgb.png", "chart_realblur_set_psnr_realblur_masked.png"):
        assert cv2.imread(str(files[name])).std() > 0


def test_an_evaluation_without_its_scores_is_named(tmp_path):
    """A set listed in eval.json without its metrics.csv (scores written elsewhere) ended in a bare
    FileNotFoundError."""
    _fake_sweep(tmp_path, {"base": np.full((2, 3), 28.0), "other": np.full((2, 3), 29.0)})
    path = metrics_csv(tmp_path, "t_other_s1", "set1")
    path.unlink()
    with pytest.raises(DataError) as exc:
        write_report(tmp_path)
    assert "run t_other_s1" in str(exc.value) and f"{path} is missing" in str(exc.value)
    assert "lists test set 'set1'" in str(exc.value)
