"""Training crops of whole frames (the GoPro recipe) and centre crops for validation.

GoPro frames (1280x720) are cut into 512x512 crops with stride 256; the last
crop of each axis is moved back to touch the border, which gives rows
{0, 208} x cols {0, 256, 512, 768} = 8 crops per frame (docs/architecture.md 3.2).
Crops are lossless PNGs of the decoded pixels (bit depth and channels kept).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from hidiff.data.image_io import encode_png_raw, read_raw
from hidiff.data.prepare.checks import Pair, PrepareReport, size_mismatch
from hidiff.data.prepare.staging import Staging
from hidiff.errors import DataError
from hidiff.utils.atomic import atomic_write_bytes
from hidiff.utils.progress import Progress


def axis_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets along one axis: every ``stride``, plus one crop flush with the end."""
    if size <= 0 or stride <= 0:
        raise ValueError(f"crop size and stride must be positive, got size={size}, stride={stride}")
    if length < size:
        raise ValueError(f"an axis of {length} px is shorter than the crop size {size}")
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def crop_positions(h: int, w: int, size: int, stride: int) -> list[tuple[int, int]]:
    """``(top, left)`` of every crop of an ``h`` x ``w`` image, row by row."""
    return [(top, left) for top in axis_starts(h, size, stride) for left in axis_starts(w, size, stride)]


def _read_pair(pair: Pair) -> dict:
    """The decoded images of a pair, refused unless every role has the same size (``--no-verify`` skips the
    earlier size check, and a crop at one position of images of different sizes is not a pair)."""
    images = {role: read_raw(path) for role, path in pair.files.items()}
    mismatch = size_mismatch(pair, {role: img.shape[:2] for role, img in images.items()})
    if mismatch:
        raise DataError(f"{mismatch}; crops of them would not show the same scene")
    return images


def _crop_pair_grid(pair: Pair, out_dirs: dict[str, Path], size: int, stride: int) -> int:
    images = _read_pair(pair)
    h, w = next(iter(images.values())).shape[:2]
    try:
        positions = crop_positions(h, w, size, stride)
    except ValueError as exc:
        raise DataError(f"cannot crop '{pair.files[next(iter(pair.files))]}' ({h}x{w}): {exc}") from None
    for top, left in positions:
        name = f"{pair.key}_y{top:04d}_x{left:04d}.png"
        for role, img in images.items():
            atomic_write_bytes(out_dirs[role] / name, encode_png_raw(img[top:top + size, left:left + size]))
    return len(positions)


def _crop_pair_center(pair: Pair, out_dirs: dict[str, Path], size: int) -> int:
    for role, img in _read_pair(pair).items():
        path = pair.files[role]
        h, w = img.shape[:2]
        if h < size or w < size:
            raise DataError(f"cannot centre-crop {size}x{size} from '{path}' ({h}x{w})")
        top, left = (h - size) // 2, (w - size) // 2
        atomic_write_bytes(out_dirs[role] / f"{pair.key}.png", encode_png_raw(img[top:top + size, left:left + size]))
    return 1


def write_grid_crops(pairs: Sequence[Pair], out_root: Path, size: int, stride: int, *, stage: Staging,
                     workers: int, report: PrepareReport) -> list[Path]:
    """Stage grid crops of every pair as ``out_root/<role>/``; return the (final) role folders."""
    roles = list(pairs[0].files) if pairs else ["input", "target"]
    out_dirs = {role: stage.folder(out_root / role) for role in roles}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            Progress(len(pairs), desc=f"cropping {out_root}", unit="pair") as bar:
        n = 0
        for count in pool.map(lambda p: _crop_pair_grid(p, out_dirs, size, stride), pairs):
            n += count
            bar.update(1)
    for role in roles:
        report.output(out_root / role, n)
    return [out_root / role for role in roles]


def write_center_crops(pairs: Sequence[Pair], out_root: Path, size: int, *, stage: Staging, workers: int,
                       report: PrepareReport) -> list[Path]:
    """Stage one centred ``size`` x ``size`` crop per pair as ``out_root/<role>/<key>.png``."""
    roles = list(pairs[0].files) if pairs else ["input", "target"]
    out_dirs = {role: stage.folder(out_root / role) for role in roles}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            Progress(len(pairs), desc=f"cropping {out_root}", unit="pair") as bar:
        n = 0
        for count in pool.map(lambda p: _crop_pair_center(p, out_dirs, size), pairs):
            n += count
            bar.update(1)
    for role in roles:
        report.output(out_root / role, n)
    return [out_root / role for role in roles]
