"""The frozen camera-shake benchmark: blurry input, Wiener, Richardson-Lucy and hidiff models on the same pairs.

The set (``build_or_verify``): one centred ``crop``² pair per photo of a folder,
blurred with a camera-shake kernel of :mod:`hidiff.data.blur_kernels` on a
``kernel_size``² canvas, Gaussian noise of exactly ``noise_sigma``, quantised to
8 bits, the true kernel kept as ``kernels/<key>.npy`` (written by
:func:`hidiff.data.synthetic_set.freeze_synthetic_set`, so every draw is a pure
function of the seed and the photo's name).  It is written once; a later run
checks the manifest's parameters, the source photos' and every file's sha256,
and refuses a set that differs instead of rewriting it.

Scoring (``score_set``): RGB PSNR/SSIM over the whole image (the ``gopro``
protocol: MATLAB psnr and ssim on uint8) per image and method.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Dict, List, Mapping, Optional, Sequence

import numpy as np

from hidiff.data.image_io import list_images, read_image_uint8
from hidiff.data.synthetic_set import freeze_synthetic_set
from hidiff.errors import DataError
from hidiff.evaluation.intervals import two_arm_interval
from hidiff.evaluation.protocols import get_protocol
from hidiff.utils.atomic import atomic_write_text

CROP = 256
KERNEL_SIZE = 31
NOISE_SIGMA = 0.01
SEED = 2026
BLURRY = "blurry input"
PROTOCOL = "gopro"

#: ``method(blurry uint8 HxWx3, kernel, key) -> restored uint8 HxWx3``
Method = Callable[[np.ndarray, np.ndarray, str], np.ndarray]


@dataclass(frozen=True)
class SetParams:
    """What defines a frozen set; a folder built with other values is another benchmark."""

    crop: int = CROP
    kernel_size: int = KERNEL_SIZE
    noise_sigma: float = NOISE_SIGMA
    seed: int = SEED


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_set(photos: Path, folder: Path, params: SetParams) -> dict:
    """The manifest of the set in ``folder`` after checking it is the one ``photos`` and ``params`` make."""

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    recorded = {"crop": manifest.get("crop"), "kernel_size": manifest.get("kernel_size"),
                "noise_sigma": manifest.get("noise_sigma"), "seed": manifest.get("seed")}
    wanted = {"crop": params.crop, "kernel_size": params.kernel_size,
              "noise_sigma": [params.noise_sigma, params.noise_sigma], "seed": params.seed}
    if recorded != wanted:
        raise DataError(f"the set in '{folder}' was built with {recorded}, this run asks for {wanted}; "
                        f"pass another set folder")
    sources = {p.name: _sha256_file(p) for p in list_images(photos)}
    built = {item["source"]: item["source_sha256"] for item in manifest["items"]}
    if sources != built:
        changed = sorted(set(sources.items()) ^ set(built.items()))
        raise DataError(f"the photos in '{photos}' are not those the set in '{folder}' was built from "
                        f"(differing: {', '.join(sorted({name for name, _ in changed}))}); pass another set folder")
    for rel, digest in manifest["files"].items():
        path = folder / rel
        if not path.is_file() or _sha256_file(path) != digest:
            raise DataError(f"'{path}' is missing or changed since the set was built (sha256 mismatch); "
                            f"delete '{folder}' to rebuild it")
    return manifest


def build_or_verify(photos: Path, folder: Path, params: SetParams = SetParams(), log=print) -> dict:
    """Build the set once (see module doc); on later runs verify it.  Returns the manifest.

    A folder without ``manifest.json`` (never built, or a build cut short: the
    manifest is written last) is (re)built.
    """

    if not Path(photos).is_dir() or not list_images(photos):
        raise DataError(f"photo folder '{photos}' does not exist or holds no images")
    if (folder / "manifest.json").is_file():
        manifest = verify_set(photos, folder, params)
        log(f"  verified the frozen set in '{folder}' ({len(manifest['items'])} pairs, every sha256 matches)")
        return manifest
    log(f"  building the frozen set in '{folder}'")
    return freeze_synthetic_set(photos, folder, seed=params.seed, crop=params.crop, kernel_size=params.kernel_size,
                                noise_sigma=params.noise_sigma, overwrite=True, log=log)


def set_digest(folder: Path) -> str:
    """sha256 of the set's manifest, which holds every file's sha256: one name for the whole set."""
    return _sha256_file(folder / "manifest.json")


def score_set(folder: Path, methods: Mapping[str, Sequence[Method]], log=print) -> List[dict]:
    """Per-image rows ``{key, method, run, psnr, ssim}`` of the blurry input and every method on the set.

    A method has one run, or several (the same recipe trained with different seeds: ``run`` 0, 1, ...).
    """

    protocol = get_protocol(PROTOCOL)
    psnr_col, ssim_col = protocol.headline
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    rows = []
    for item in manifest["items"]:
        key = item["key"]
        gt = read_image_uint8(folder / "target" / f"{key}.png")
        lq = read_image_uint8(folder / "input" / f"{key}.png")
        kernel = np.load(folder / "kernels" / f"{key}.npy")
        for name, runs in {BLURRY: [lambda x, k, key: x], **methods}.items():
            for run, method in enumerate(runs):
                out = method(lq, kernel, key)
                if out.shape != gt.shape or out.dtype != np.uint8:
                    raise DataError(f"method '{name}' returned {out.dtype} {out.shape} for '{key}', "
                                    f"expected uint8 {gt.shape}")
                s = protocol.score_pair(out, gt)
                rows.append({"key": key, "method": name, "run": run, "psnr": float(s[psnr_col]),
                             "ssim": float(s[ssim_col])})
        log(f"  {key}: " + ", ".join(f"{run_label(r)} {r['psnr']:.2f}" for r in rows if r["key"] == key))
    return rows


def run_label(row: dict) -> str:
    """``method`` for a method's first run, ``method #i`` for the others."""
    return row["method"] if row["run"] == 0 else f"{row['method']} #{row['run']}"


def score_array(rows: Sequence[dict], method: str, metric: str = "psnr") -> np.ndarray:
    """images x runs array of one method's scores (images in first-seen order)."""
    keys = list(dict.fromkeys(r["key"] for r in rows))
    runs = sorted({r["run"] for r in rows if r["method"] == method})
    cell = {(r["key"], r["run"]): r[metric] for r in rows if r["method"] == method}
    missing = [(k, i) for k in keys for i in runs if (k, i) not in cell]
    if not runs or missing:
        raise DataError(f"method '{method}': no {metric} for {missing[:1] or 'any image'}")
    return np.array([[cell[(k, i)] for i in runs] for k in keys])


def summarize(rows: Sequence[dict]) -> List[dict]:
    """One row per method (first-seen order): mean PSNR/SSIM over images and runs, the standard deviation
    of the per-run mean PSNR (NaN for one run), mean PSNR gain over the blurry input, images, runs."""
    out = []
    blurry = score_array(rows, BLURRY)[:, 0]
    for name in dict.fromkeys(r["method"] for r in rows):
        psnr, ssim = score_array(rows, name), score_array(rows, name, "ssim")
        per_run = psnr.mean(axis=0)
        out.append({"method": name, "psnr": float(psnr.mean()), "ssim": float(ssim.mean()),
                    "psnr_std": float(per_run.std(ddof=1)) if per_run.size > 1 else float("nan"),
                    "gain_db": float((psnr - blurry[:, None]).mean()), "images": psnr.shape[0],
                    "runs": psnr.shape[1]})
    return out


def compare(rows: Sequence[dict], baseline: str, trained: Collection[str] = ()) -> List[dict]:
    """Every other method's mean PSNR difference to ``baseline`` with a 95 % interval
    (:func:`hidiff.evaluation.intervals.two_arm_interval`: images paired; the training luck of the
    ``trained`` methods, the models, measured from their runs)."""
    base = score_array(rows, baseline)
    out = []
    for name in dict.fromkeys(r["method"] for r in rows):
        if name == baseline:
            continue
        mine = score_array(rows, name)
        ci = two_arm_interval(mine, base, variant_trained=name in trained, baseline_trained=baseline in trained)
        verdict = ci.verdict.replace("baseline", baseline)
        out.append({"method": name, "baseline": baseline, "diff_db": ci.mean, "low": ci.low, "high": ci.high,
                    "runs": mine.shape[1], "baseline_runs": base.shape[1], "images": ci.n_images,
                    "verdict": verdict})
    return out


def _csv(header: Sequence[str], rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([f"{r[h]:.4f}" if isinstance(r[h], float) else r[h] for h in header])
    return buf.getvalue()


def markdown_table(summary: Sequence[dict]) -> str:
    """The results table; a method with several runs shows the spread of its per-run means."""
    lines = ["| method | PSNR (dB) | SSIM | gain over blurry (dB) | images | runs |", "|---|---:|---:|---:|---:|---:|"]
    for r in summary:
        spread = f" ± {r['psnr_std']:.2f}" if r["runs"] > 1 else ""
        lines.append(f"| {r['method']} | {r['psnr']:.2f}{spread} | {r['ssim']:.4f} | {r['gain_db']:+.2f} | "
                     f"{r['images']} | {r['runs']} |")
    return "\n".join(lines) + "\n"


def markdown_comparison(comparison: Sequence[dict]) -> str:
    """The differences to the baseline with their 95 % intervals and what they allow one to say."""
    if not comparison:
        return ""
    base = comparison[0]["baseline"]
    lines = [f"Against `{base}` (mean PSNR difference; 95 % interval over the images and, where a model has "
             f"several runs, the training runs: docs/default_model.md, \"How the comparison is made\"):",
             "", "| method | runs | difference (dB) | 95 % interval | verdict |", "|---|---:|---:|---|---|"]
    for c in comparison:
        interval = (f"[{c['low']:+.2f}, {c['high']:+.2f}]" if math.isfinite(c["low"]) and math.isfinite(c["high"])
                    else f"none ({c['images']} image)")
        lines.append(f"| {c['method']} | {c['runs']} vs {c['baseline_runs']} | {c['diff_db']:+.2f} | "
                     f"{interval} | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, rows: Sequence[dict], header_lines: Sequence[str],
                  baseline: Optional[str] = None, trained: Collection[str] = ()) -> Dict[str, Path]:
    """``results.md`` (header lines, table, comparison with ``baseline``), ``results.csv`` (per method),
    ``per_image.csv`` and, with a baseline, ``comparison.csv`` (without one, an earlier run's is removed, so no
    comparison of other results stands beside these)."""

    summary = summarize(rows)
    comparison = compare(rows, baseline, trained) if baseline is not None else []
    out.mkdir(parents=True, exist_ok=True)
    files = {"results.md": out / "results.md", "results.csv": out / "results.csv",
             "per_image.csv": out / "per_image.csv"}
    text = "".join(f"{line}\n" for line in header_lines) + "\n" + markdown_table(summary)
    if comparison:
        text += "\n" + markdown_comparison(comparison)
        files["comparison.csv"] = out / "comparison.csv"
        atomic_write_text(files["comparison.csv"], _csv(["method", "baseline", "runs", "baseline_runs", "diff_db",
                                                         "low", "high", "images", "verdict"], comparison))
    else:
        (out / "comparison.csv").unlink(missing_ok=True)
    atomic_write_text(files["results.md"], text)
    atomic_write_text(files["results.csv"], _csv(["method", "psnr", "psnr_std", "ssim", "gain_db", "images",
                                                  "runs"], summary))
    atomic_write_text(files["per_image.csv"], _csv(["key", "method", "run", "psnr", "ssim"], rows))
    return files
