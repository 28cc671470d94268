"""The sweep's results: per-image table, statistics table, markdown summary and an honest chart.

Reads every final run's ``eval/<run>/<run>/<set>/metrics.csv`` (written by the test
runner, one row per image) and writes ``per_image.csv``, ``results.csv``,
``results.md`` and ``chart_<set>_<metric>.png`` into the sweep folder.  Each set is
compared on the metrics of its own protocol (``summary.json`` beside metrics.csv;
hidiff/evaluation/protocols.py) and its ``val.metrics``, so one sweep can score
GoPro and RealBlur sets side by side; diagnostics such as RealBlur's ``ecc_cc``
stay in per_image.csv.  Each table says how many comparisons its verdicts make,
as they are not corrected for multiple comparisons.  results.md and results.csv
name the hash of the plan they describe (:func:`plan_hash` of plan.json).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import cv2
import numpy as np

from hidiff.errors import DataError
from hidiff.evaluation.protocols import PROTOCOLS
from hidiff.sweep.stats import NOT_DISTINGUISHABLE, VariantResult, analyse
from hidiff.utils.atomic import atomic_write_bytes, atomic_write_text

INPUT_PREFIX = "input_"
#: protocol columns that describe how the protocol aligned the images, not the restoration
DIAGNOSTICS = {"realblur": ("ecc_converged", "ecc_cc", "intensity_scale")}
REPORT_FILES = ("results.md", "results.csv", "per_image.csv")


def plan_hash(plan: Mapping) -> str:
    """Short sha256 of a plan (plan.json's content): which plan a report describes."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode("utf-8")).hexdigest()[:12]


def report_files(folder: Path) -> List[Path]:
    """The report files present in a sweep folder (tables and charts)."""
    folder = Path(folder)
    return [p for p in [folder / n for n in REPORT_FILES] + sorted(folder.glob("chart_*.png")) if p.is_file()]


def protocol_metrics(protocol: str, where: str) -> tuple:
    """The columns of ``protocol`` that score the restoration (its diagnostics left out)."""
    cls = PROTOCOLS.get(str(protocol))
    if cls is None:
        raise DataError(f"{where}: unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return tuple(c for c in cls().columns if c not in DIAGNOSTICS.get(protocol, ()))


def metrics_csv(folder: Path, run: str, set_name: str) -> Path:
    """Where ``test.py`` leaves a run's per-image scores: ``<results_root>/<name>/<weights label>/<set>``.

    A sweep's evaluation names both the options and the weights (``--experiment``) after the run.
    """
    return Path(folder) / "eval" / run / run / set_name / "metrics.csv"

def _float(text: str) -> Optional[float]:
    """A number of metrics.csv (inf and NaN kept: refused by name when compared); else None."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _set_metrics(folder: Path, run: str, set_name: str) -> List[str]:
    """The metric columns of one evaluated set: its protocol's and its ``val.metrics``."""
    path = metrics_csv(folder, run, set_name).with_name("summary.json")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        protocol = summary["protocol"]
        extra = list((summary.get("meta") or {}).get("val_metrics") or {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read the set's protocol ({exc!r}); the test runner writes it beside "
                        f"metrics.csv, so run the sweep again to evaluate {run} anew") from None
    return list(protocol_metrics(protocol, str(path))) + extra


def collect_rows(folder: Path) -> tuple[List[dict], Dict[str, List[str]], dict]:
    """Per-image rows of every evaluated run, the metric columns of each test set and the plan.

    The metrics are ``{set: [metrics]}``: test sets of other protocols are scored under other columns (GoPro's
    psnr_uint8_rgb, RealBlur's psnr_realblur_masked), so each set is compared on its own protocol's metrics.
    """
    plan = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
    rows: List[dict] = []
    wanted_by_set: Dict[str, tuple] = {}     # set -> (its metric columns, the run they were read from)
    found: Dict[str, set] = {}
    for v in plan["variants"]:
        for run in v["runs"]:
            meta = next(r for r in plan["runs"] if r["name"] == run)
            rec_path = folder / "eval" / run / "eval.json"
            if not rec_path.is_file():
                raise DataError(f"run {run} has no evaluation ({rec_path}); run the sweep to the end first")
            for set_name in json.loads(rec_path.read_text(encoding="utf-8"))["sets"]:
                path = metrics_csv(folder, run, set_name)
                if not path.is_file():
                    raise DataError(f"run {run}: its evaluation ({rec_path}) lists test set '{set_name}', but "
                                    f"{path} is missing (the test runner writes each set's per-image scores "
                                    f"there); run the sweep again to evaluate {run} anew")
                wanted = _set_metrics(folder, run, set_name)
                first, first_run = wanted_by_set.setdefault(set_name, (wanted, run))
                if wanted != first:
                    raise DataError(f"test set '{set_name}' is scored on {', '.join(first)} in run {first_run} but "
                                    f"on {', '.join(wanted)} in run {run} (summary.json beside each metrics.csv); "
                                    f"the runs must be evaluated alike to be compared, so run the sweep again")
                seen = found.setdefault(set_name, set())
                with open(path, newline="", encoding="utf-8") as fh:
                    for r in csv.DictReader(fh):
                        row = {"variant": v["name"], "seed_index": meta["seed_index"], "run": run, "set": set_name,
                               "image": r["name"]}
                        for k, val in r.items():
                            if k != "name" and _float(val) is not None:
                                row[k] = float(val)
                                if k in wanted:
                                    seen.add(k)
                        rows.append(row)
    if not rows:
        raise DataError(f"{folder}: no per-image results in the evaluations")
    metrics = {s: [m for m in wanted_by_set[s][0] if m in found[s]] for s in sorted(found)}
    empty = [s for s, m in metrics.items() if not m]
    if empty:
        raise DataError(f"{folder}: test set(s) {', '.join(empty)} have no per-image values of their metrics "
                        f"({'; '.join(f'{s}: ' + ', '.join(wanted_by_set[s][0]) for s in empty)}) in metrics.csv")
    return rows, metrics, plan


def _csv(header: Sequence[str], body: Sequence[Sequence]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(body)
    return buf.getvalue()


def _fmt(v: float, metric: str) -> str:
    """dB with 2 decimals; SSIM, LPIPS and MAE (values below 1) with 4."""
    return f"{v:.4f}" if any(k in metric for k in ("ssim", "lpips", "mae")) else f"{v:.2f}"


def _signed(v: float, metric: str) -> str:
    return ("+" if v >= 0 else "") + _fmt(v, metric)


def input_reference(rows: Sequence[Mapping], baseline: str, set_name: str, metric: str) -> Optional[float]:
    """Mean score of the blurry input (the test runner's ``input_<metric>`` column), if it was scored."""
    vals = [r[INPUT_PREFIX + metric] for r in rows if r["variant"] == baseline and r["set"] == set_name
            and r["seed_index"] == 0 and INPUT_PREFIX + metric in r]
    return float(np.mean(vals)) if vals else None


def markdown(results: Sequence[VariantResult], rows: Sequence[Mapping], plan: Mapping,
             metrics: Mapping[str, Sequence[str]], labels: Mapping[str, str], extra_rows: Mapping = None,
             charts: Mapping[str, str] = None) -> str:
    """results.md: one table per test set, with that set's metrics (``{set: [metrics]}``) and its chart
    (``charts``: ``{set: file name}``, of the set's first metric)."""
    baseline = plan["baseline"]
    lines = [f"# Sweep '{plan['name']}'", "",
             f"Plan {plan_hash(plan)} (plan.json). "
             f"{len(plan['seeds'])} seed(s) per variant (manual_seed {', '.join(map(str, plan['seeds']))}); "
             f"baseline: {labels.get(baseline, baseline)}.", "",
             "Each cell: mean over the test images, then mean +- standard deviation over seeds. "
             "Difference: paired per image (same image, same seed index) against the baseline, with its 95 % "
             "interval over the images and the seeds (t interval, conservative with few seeds: "
             "hidiff/evaluation/intervals.py); "
             f"'{NOT_DISTINGUISHABLE}' when the interval contains 0; one test image gives no interval (nothing "
             f"is known about other images).", ""]
    for set_name in sorted({r.set for r in results}):
        sub = [r for r in results if r.set == set_name]
        n_img = sub[0].n_images
        lines += [f"## {set_name} ({n_img} images)", ""]
        set_metrics = metrics[set_name]
        k = sum(r.vs_baseline is not None for r in sub)
        if k:   # the verdicts are not corrected for multiple comparisons: say so, with how many there are
            n_var = len({r.variant for r in sub if r.vs_baseline is not None})
            n_met = len(set_metrics)
            lines += [f"Each verdict is a per-comparison 95 % interval, not corrected for the k comparisons in "
                      f"this table (k = {k}: {n_var} variant{'s' * (n_var != 1)} x {n_met} "
                      f"metric{'s' * (n_met != 1)} against the baseline); among k comparisons of equal variants, "
                      f"up to about 5 % can get a firm verdict by chance.", ""]
        header = ["variant"]
        for m in set_metrics:
            header += [m, f"{m} vs baseline [95 % CI]", "verdict"]
        lines += ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
        ref = {m: input_reference(rows, baseline, set_name, m) for m in set_metrics}
        if all(v is not None for v in ref.values()):
            cells = ["blurry input"]
            for m in set_metrics:
                cells += [_fmt(ref[m], m), "", ""]
            lines.append("| " + " | ".join(cells) + " |")
        for name, vals in (extra_rows or {}).get(set_name, {}).items():
            cells = [name]
            for m in set_metrics:
                cells += [_fmt(vals[m], m) if m in vals else "-", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
        for v in plan["variants"]:
            cells = [labels.get(v["name"], v["name"]) + (" (baseline)" if v["name"] == baseline else "")]
            for m in set_metrics:
                r = next(x for x in sub if x.variant == v["name"] and x.metric == m)
                cells.append(f"{_fmt(r.mean, m)} +- {_fmt(r.std, m)}" if math.isfinite(r.std)
                             else f"{_fmt(r.mean, m)} (1 seed)")
                if r.vs_baseline is None:
                    cells += ["-", "-"]
                elif r.vs_baseline.n_images < 2:
                    cells += [f"{_signed(r.vs_baseline.mean, m)} (no interval: 1 image)", r.vs_baseline.verdict]
                else:
                    ci = r.vs_baseline
                    cells += [f"{_signed(ci.mean, m)} [{_signed(ci.low, m)}, {_signed(ci.high, m)}]", ci.verdict]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if (charts or {}).get(set_name):
            lines += [f"![{set_metrics[0]} on {set_name}]({charts[set_name]})", ""]
    return "\n".join(lines)


def results_csv(results: Sequence[VariantResult], labels: Mapping[str, str], plan: str = "") -> str:
    """One row per variant, set and metric; blank where a value is unknown (the std of one seed, the interval
    of one image) and ``plan``, the hash of the plan it describes, in every row."""
    def num(v: Optional[float]) -> str:
        return repr(v) if v is not None and math.isfinite(v) else ""

    body = []
    for r in results:
        ci = r.vs_baseline
        body.append([r.set, r.variant, labels.get(r.variant, r.variant), r.metric, repr(r.mean), num(r.std),
                     r.n_seeds, r.n_images, "" if ci is None else repr(ci.mean), "" if ci is None else num(ci.low),
                     "" if ci is None else num(ci.high), "baseline" if ci is None else ci.verdict, plan])
    return _csv(["set", "variant", "label", "metric", "mean", "std_over_seeds", "n_seeds", "n_images",
                 "diff_vs_baseline", "ci95_low", "ci95_high", "verdict", "plan"], body)


def per_image_csv(rows: Sequence[Mapping]) -> str:
    keys = ["variant", "seed_index", "run", "set", "image"]
    cols = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in keys]
    return _csv(keys + cols, [[r.get(k, "") for k in keys + cols] for r in rows])


def _nice_step(span: float) -> float:
    raw = span / 5.0
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def axis_range(means: Sequence[float], stds: Sequence[float], reference: Optional[float]
               ) -> tuple[float, float, bool]:
    """``(start, end, starts_at_reference)`` of the value axis of a chart of ``means +- stds``.

    The axis starts at the blurry input's score when every error bar lies above it
    (bars then show the gain over doing nothing), otherwise a little below the
    lowest error bar, so no bar is cut off.
    """
    stds = [s if math.isfinite(s) else 0.0 for s in stds]    # one seed: no error bar
    lows = [m - s for m, s in zip(means, stds)]
    highs = [m + s for m, s in zip(means, stds)]
    span = max(max(highs) - min(lows), abs(max(highs)) * 1e-3, 1e-6)
    at_ref = reference is not None and reference <= min(lows)
    lo = reference if at_ref else min(lows) - 0.1 * span
    hi = max(highs + ([reference] if reference is not None else [])) + 0.1 * span
    return lo, hi, at_ref


def draw_chart(labels: Sequence[str], means: Sequence[float], stds: Sequence[float], metric: str,
               reference: Optional[float]) -> bytes:
    """PNG of horizontal bars with +-std error bars (OpenCV), on the axis of :func:`axis_range`.

    The axis does not start at 0: the chart marks the break and says where it starts.  A NaN std (one seed:
    the spread was not measured) draws no error bar, rather than one of width 0.
    """
    lo, hi, at_ref = axis_range(means, stds, reference)
    origin = f"the blurry input ({_fmt(lo, metric)})" if at_ref else _fmt(lo, metric)
    font = cv2.FONT_HERSHEY_SIMPLEX
    labels = [label if len(label) <= 48 else label[:47] + "~" for label in labels]
    left = 16 + max(cv2.getTextSize(label, font, 0.5, 1)[0][0] for label in labels)
    row_h, width, top = 34, left + 660, 16
    right = width - 70
    height = top + row_h * len(labels) + 70
    img = np.full((height, width, 3), 255, np.uint8)
    x_of = lambda v: int(round(left + (v - lo) / (hi - lo) * (right - left)))  # noqa: E731
    black, grey, blue = (0, 0, 0), (150, 150, 150), (168, 120, 72)  # BGR
    axis_y = top + row_h * len(labels) + 4
    step = _nice_step(hi - lo)
    t = math.ceil(lo / step) * step
    while t <= hi:
        x = x_of(t)
        cv2.line(img, (x, top), (x, axis_y), (230, 230, 230), 1)
        cv2.line(img, (x, axis_y), (x, axis_y + 5), black, 1)
        cv2.putText(img, _fmt(t, metric), (x - 18, axis_y + 20), font, 0.42, black, 1,
                    cv2.LINE_AA)
        t += step
    for i, (label, m, s) in enumerate(zip(labels, means, stds)):
        y = top + i * row_h
        cv2.rectangle(img, (left, y + 6), (max(left + 1, x_of(m)), y + row_h - 6), blue, -1)
        yc = y + row_h // 2
        if math.isfinite(s):
            x0, x1 = x_of(m - s), x_of(m + s)
            cv2.line(img, (x0, yc), (x1, yc), black, 2)
            cv2.line(img, (x0, yc - 6), (x0, yc + 6), black, 2)
            cv2.line(img, (x1, yc - 6), (x1, yc + 6), black, 2)
            value = f"{_fmt(m, metric)} +- {_fmt(s, metric)}"
        else:
            x1, value = x_of(m), f"{_fmt(m, metric)} (1 seed)"
        cv2.putText(img, label, (8, yc + 5), font, 0.5, black, 1, cv2.LINE_AA)
        cv2.putText(img, value, (min(x1 + 6, right - 10), yc + 5), font, 0.42, black, 1, cv2.LINE_AA)
    if reference is not None:
        xr = x_of(reference)
        for yy in range(top, axis_y, 8):
            cv2.line(img, (xr, yy), (xr, min(yy + 4, axis_y)), grey, 1)
    cv2.line(img, (left, top), (left, axis_y), black, 1)
    cv2.line(img, (left, axis_y), (right, axis_y), black, 1)
    for dx in (-4, 2):  # axis break: the scale does not start at 0
        cv2.line(img, (left + dx - 3, axis_y + 6), (left + dx + 3, axis_y - 6), black, 1)
    spread = "mean +- std over seeds" if any(math.isfinite(s) for s in stds) else "mean of 1 seed, spread not measured"
    caption = f"{metric}, {spread}; axis starts at {origin}, not at 0"
    if reference is not None:
        caption += "; dashed: blurry input"
    cv2.putText(img, caption, (8, height - 14), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise DataError("draw_chart: OpenCV could not encode the chart")
    return png.tobytes()


def write_report(folder: Path, *,
                 extra_rows: Optional[Mapping[str, Mapping[str, Mapping[str, float]]]] = None) -> Dict[str, Path]:
    """Statistics of a finished sweep into its folder; returns the written files.

    ``extra_rows``: reference methods without seeds, ``{set: {name: {metric: value}}}``
    (shown in the table for context, not compared).
    """
    rows, metrics, plan = collect_rows(folder)
    labels = {v["name"]: v["label"] for v in plan["variants"]}
    variants = [v["name"] for v in plan["variants"]]
    results = analyse(rows, variants, plan["baseline"], metrics)
    files = {"results.md": folder / "results.md", "results.csv": folder / "results.csv",
             "per_image.csv": folder / "per_image.csv"}
    atomic_write_text(files["per_image.csv"], per_image_csv(rows))
    atomic_write_text(files["results.csv"], results_csv(results, labels, plan_hash(plan)))
    charts: Dict[str, str] = {}
    for set_name in sorted({r.set for r in results}):
        metric = metrics[set_name][0]     # the set's protocol's headline (its PSNR)
        sub = [next(r for r in results if r.set == set_name and r.metric == metric and r.variant == v)
               for v in variants]
        png = draw_chart([labels[v] for v in variants], [r.mean for r in sub], [r.std for r in sub], metric,
                         input_reference(rows, plan["baseline"], set_name, metric))
        charts[set_name] = f"chart_{set_name}_{metric}.png"
        files[charts[set_name]] = folder / charts[set_name]
        atomic_write_bytes(files[charts[set_name]], png)
    text = markdown(results, rows, plan, metrics, labels, extra_rows, charts)
    atomic_write_text(files["results.md"], text)
    return files
