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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence

import numpy as np

from hidiff.data.image_io import list_images, read_image_uint8
from hidiff.data.synthetic_set import freeze_synthetic_set
from hidiff.errors import DataError
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


def score_set(folder: Path, methods: Mapping[str, Method], log=print) -> List[dict]:
    """Per-image rows ``{key, method, psnr, ssim}`` of the blurry input and every method on the set."""

    protocol = get_protocol(PROTOCOL)
    psnr_col, ssim_col = protocol.headline
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    rows = []
    for item in manifest["items"]:
        key = item["key"]
        gt = read_image_uint8(folder / "target" / f"{key}.png")
        lq = read_image_uint8(folder / "input" / f"{key}.png")
        kernel = np.load(folder / "kernels" / f"{key}.npy")
        for name, method in {BLURRY: lambda x, k, key: x, **methods}.items():
            out = method(lq, kernel, key)
            if out.shape != gt.shape or out.dtype != np.uint8:
                raise DataError(f"method '{name}' returned {out.dtype} {out.shape} for '{key}', "
                                f"expected uint8 {gt.shape}")
            s = protocol.score_pair(out, gt)
            rows.append({"key": key, "method": name, "psnr": float(s[psnr_col]), "ssim": float(s[ssim_col])})
        log(f"  {key}: " + ", ".join(f"{r['method']} {r['psnr']:.2f}" for r in rows if r["key"] == key))
    return rows


def summarize(rows: Sequence[dict]) -> List[dict]:
    """One row per method (first-seen order): mean PSNR/SSIM, mean PSNR gain over the blurry input, images."""
    blurry = {r["key"]: r["psnr"] for r in rows if r["method"] == BLURRY}
    out = []
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        out.append({"method": name, "psnr": float(np.mean([r["psnr"] for r in mine])),
                    "ssim": float(np.mean([r["ssim"] for r in mine])),
                    "gain_db": float(np.mean([r["psnr"] - blurry[r["key"]] for r in mine])), "images": len(mine)})
    return out


def _csv(header: Sequence[str], rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([f"{r[h]:.4f}" if isinstance(r[h], float) else r[h] for h in header])
    return buf.getvalue()


def markdown_table(summary: Sequence[dict]) -> str:
    lines = ["| method | PSNR (dB) | SSIM | gain over blurry (dB) | images |", "|---|---:|---:|---:|---:|"]
    for r in summary:
        lines.append(f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['gain_db']:+.2f} | {r['images']} |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, rows: Sequence[dict], header_lines: Sequence[str]) -> Dict[str, Path]:
    """``results.md`` (header lines + table), ``results.csv`` (per method), ``per_image.csv``."""

    summary = summarize(rows)
    out.mkdir(parents=True, exist_ok=True)
    files = {"results.md": out / "results.md", "results.csv": out / "results.csv",
             "per_image.csv": out / "per_image.csv"}
    atomic_write_text(files["results.md"], "".join(f"{line}\n" for line in header_lines) + "\n"
                      + markdown_table(summary))
    atomic_write_text(files["results.csv"], _csv(["method", "psnr", "ssim", "gain_db", "images"], summary))
    atomic_write_text(files["per_image.csv"], _csv(["key", "method", "psnr", "ssim"], rows))
    return files
