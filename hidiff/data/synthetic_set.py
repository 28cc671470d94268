"""Freeze a synthetic blurry/sharp benchmark to disk, reproducible byte for byte.

``freeze_synthetic_set`` writes, for every photo of ``sharp_dir`` (by stem)::

    out/input/<key>.png      blurry, 8-bit RGB
    out/target/<key>.png     sharp, 8-bit RGB, same size
    out/kernels/<key>.npy    the PSF (float64, sums to 1)
    out/kernels/<key>.png    an 8-bit preview of the PSF (scaled to its maximum, 4x enlarged)
    out/manifest.json        parameters, per-image draws and the sha256 of every file

The pairs are exactly the val/test items of ``SyntheticBlurDataset`` with the
same ``seed``/``gt_size``/``kernel_size``/``noise_sigma``: each image's draws
come from ``key_rng(seed, key)``, so the set does not depend on which other
photos are present, and two runs write identical bytes.

The set is built in ``out/.hidiff-staging-<pid>/`` and moved into place only when
every photo has been made into a pair: a photo that is too small or unreadable
leaves an earlier set (``overwrite``) as it was.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from hidiff.data.blur_kernels import check_kernel_size, noise_range, synthesize_pair
from hidiff.data.image_io import encode_png, list_images, read_image
from hidiff.data.sample_rng import key_rng
from hidiff.data.synthetic_dataset import sharp_region
from hidiff.errors import DataError
from hidiff.utils.atomic import atomic_write_bytes, atomic_write_text

FORMAT = "hidiff-synthetic-blur/1"
SUBFOLDERS = ("input", "target", "kernels")
#: what a set consists of under ``out``; an earlier set's entries are all replaced (or removed) together
ENTRIES = (*SUBFOLDERS, "manifest.json", "ATTRIBUTION.md")
PREVIEW_SCALE = 4


def kernel_preview(kernel: np.ndarray) -> np.ndarray:
    """The PSF as an 8-bit gray image scaled to its maximum and enlarged for viewing."""
    img = np.clip(np.rint(kernel / kernel.max() * 255.0), 0, 255).astype(np.uint8)
    return cv2.resize(img, None, fx=PREVIEW_SCALE, fy=PREVIEW_SCALE, interpolation=cv2.INTER_NEAREST)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def freeze_synthetic_set(sharp_dir: Union[str, Path], out_dir: Union[str, Path], *, seed: int = 0,
                         crop: Optional[int] = None, kernel_size: int = 31,
                         noise_sigma: Union[float, Sequence[float]] = (0.0, 0.02), overwrite: bool = False,
                         log=print) -> dict:
    """Write the frozen set (see module doc) and return its manifest."""
    check_kernel_size(kernel_size)
    lo, hi = noise_range(noise_sigma)
    if crop is not None and crop <= 0:
        raise DataError(f"--crop must be positive, got {crop}")
    photos = list_images(sharp_dir)
    if not photos:
        raise DataError(f"no images found in '{sharp_dir}'")
    stems = [p.stem for p in photos]
    if len(set(stems)) != len(stems):
        raise DataError(f"'{sharp_dir}' holds several images with the same stem; keys must be unique")
    out = Path(out_dir)
    existing = [out / s for s in SUBFOLDERS if (out / s).exists()] + \
        ([out / "manifest.json"] if (out / "manifest.json").exists() else [])
    if existing and not overwrite:
        raise DataError(f"'{out}' already holds a synthetic set ({existing[0].name}); pass --overwrite")
    made = [p for p in [out, *out.parents] if not p.exists()]
    stage = out / f".hidiff-staging-{os.getpid()}"
    try:
        for folder in SUBFOLDERS:
            (stage / folder).mkdir(parents=True)
        manifest = _write_set(stage, photos, sharp_dir, seed=seed, crop=crop, kernel_size=kernel_size,
                              noise=(lo, hi), log=log)
        _replace_set(out, stage)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return manifest


def _replace_set(out: Path, stage: Path) -> None:
    """Move the staged set's entries into ``out``; an earlier set's entries are set aside, then deleted."""
    aside = stage / ".old"
    aside.mkdir()
    for name in ENTRIES:
        if (out / name).exists():
            os.rename(out / name, aside / name)
    for name in ENTRIES:
        if (stage / name).exists():
            os.rename(stage / name, out / name)
    shutil.rmtree(stage)


def _write_set(stage: Path, photos: Sequence[Path], sharp_dir: Union[str, Path], *, seed: int,
               crop: Optional[int], kernel_size: int, noise: tuple, log) -> dict:
    """Every pair, the attribution and the manifest, written under ``stage``; the manifest."""
    lo, hi = noise
    files: dict[str, str] = {}

    def emit(rel: str, data: bytes) -> None:
        atomic_write_bytes(stage / rel, data)
        files[rel] = _sha256(data)

    items = []
    for path in photos:
        key = path.stem
        source = path.read_bytes()
        photo = read_image(path)
        region = sharp_region(photo, crop, kernel_size, source=str(path))
        pair = synthesize_pair(region, key_rng(seed, key), kernel_size=kernel_size, noise_sigma=(lo, hi))
        emit(f"input/{key}.png", encode_png(pair.blurry))
        emit(f"target/{key}.png", encode_png(pair.sharp))
        emit(f"kernels/{key}.npy", _npy_bytes(pair.kernel))
        emit(f"kernels/{key}.png", encode_png(kernel_preview(pair.kernel)))
        items.append({"key": key, "source": path.name, "source_sha256": _sha256(source),
                      "size_hw": list(pair.sharp.shape[:2]), "noise_sigma": pair.noise_sigma,
                      "kernel": pair.params.as_dict()})
        log(f"  {key}: {pair.sharp.shape[1]}x{pair.sharp.shape[0]}, kernel length {pair.params.length:.1f} px, "
            f"exposure {pair.params.exposure}, noise sigma {pair.noise_sigma:.4f}")
    attribution = Path(sharp_dir) / "ATTRIBUTION.md"
    if attribution.is_file():
        emit("ATTRIBUTION.md", attribution.read_bytes())
    manifest = {
        "format": FORMAT,
        "generator": "hidiff.data.blur_kernels: camera-shake trajectories after Boracchi & Foi (TIP 2012)",
        "seed": int(seed), "crop": crop, "kernel_size": kernel_size, "noise_sigma": [lo, hi],
        "per_image_rng": "numpy.random.default_rng([seed, key_seed(key)]), key_seed = sha256(key)[:8] (LE) >> 1",
        "items": items,
        "files": dict(sorted(files.items())),
    }
    atomic_write_text(stage / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest
