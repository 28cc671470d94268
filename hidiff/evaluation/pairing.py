"""Pair result images with ground truth by file name, never by position.

The official HI-Diff/Restormer scripts zip two sorted file lists, so one missing or
extra file silently shifts every later pair (docs/protocols.md).  Here a pair is two
files with the same name up to the extension (``x.png`` pairs with ``x.jpg``), any
unmatched name on either side is an error that lists the names, and a known test
set's image count is checked.  ``check_sizes`` then reads only the image headers to find a
result of another size than its ground truth, or an image too small for the protocol,
before anything is scored, and ``check_channels`` a gray image paired with a colour one (reading would
otherwise repeat the gray channel three times and score it as colour).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PIL import Image

from hidiff.data.image_io import PathLike, is_image_name, stored_size
from hidiff.errors import DataError
from hidiff.evaluation.benchmarks import lookup_set

_SHOW = 10
# Pillow modes of files that store one colour channel (an alpha channel aside)
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


@dataclass(frozen=True)
class ImagePair:
    """One result image and its ground truth, sharing ``name`` (the file stem)."""

    name: str
    pred: Path
    gt: Path


def natural_key(name: str) -> list:
    """Sort key that orders 'img2' before 'img10'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def index_images(folder: PathLike, role: str) -> dict[str, Path]:
    """``{stem: path}`` for the images directly inside ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{role} folder '{root}' does not exist or is not a folder")
    found: dict[str, Path] = {}
    for p in root.iterdir():
        if not (p.is_file() and is_image_name(p.name)):
            continue
        if p.stem in found:
            raise DataError(f"{role} folder '{root}' has two images named '{p.stem}': "
                            f"'{found[p.stem].name}' and '{p.name}'; keep one")
        found[p.stem] = p
    if not found:
        raise DataError(f"{role} folder '{root}' contains no images")
    return found


def _names(names: list[str]) -> str:
    shown = ", ".join(sorted(names, key=natural_key)[:_SHOW])
    return shown + (f", ... ({len(names) - _SHOW} more)" if len(names) > _SHOW else "")


def pair_by_name(pred_dir: PathLike, gt_dir: PathLike, set_name: str | None = None,
                 expected_count: int | None = None, check_count: bool = True) -> list[ImagePair]:
    """Pairs of same-named images in ``pred_dir`` and ``gt_dir``, in natural name order.

    ``expected_count`` defaults to the known size of ``set_name`` (e.g. 980 for
    RealBlur_J); ``check_count=False`` skips the check to score a subset.
    """
    preds = index_images(pred_dir, "prediction")
    gts = index_images(gt_dir, "ground-truth")
    no_pred = [n for n in gts if n not in preds]
    no_gt = [n for n in preds if n not in gts]
    problems = []
    if no_pred:
        problems.append(f"{len(no_pred)} ground-truth image(s) in '{gt_dir}' have no prediction "
                        f"of the same name in '{pred_dir}': {_names(no_pred)}")
    if no_gt:
        problems.append(f"{len(no_gt)} prediction(s) in '{pred_dir}' have no ground truth "
                        f"of the same name in '{gt_dir}': {_names(no_gt)}")
    if problems:
        raise DataError("; ".join(problems) + " (images are paired by file name without extension)")
    pairs = [ImagePair(n, preds[n], gts[n]) for n in sorted(gts, key=natural_key)]
    known = lookup_set(set_name)
    if expected_count is None and known is not None:
        expected_count = known.expected_count
    if check_count and expected_count is not None and len(pairs) != expected_count:
        label = known.name if known else (set_name or "the test set")
        raise DataError(f"{label} should have {expected_count} images but '{gt_dir}' has {len(pairs)}; "
                        "check the folder (RealBlur_J vs RealBlur_R, test vs train split) or pass "
                        "check_count=False (--no-count-check) to score a subset")
    return pairs


def check_sizes(pairs: list[ImagePair], min_side: int = 1, why: str = "the protocol") -> None:
    """DataError listing every pair whose result and ground truth differ in size, or whose ground truth has a
    side under ``min_side`` pixels (``why``: what needs them); read from the image headers alone, where readable
    (an unreadable header is left to the decode that follows, which names the file and the reason)."""
    wrong, small = [], []
    for p in pairs:
        gt, pred = stored_size(p.gt), stored_size(p.pred)
        if gt is not None and pred is not None and gt != pred:
            wrong.append(f"'{p.pred}' is {pred[1]}x{pred[0]} but its ground truth '{p.gt}' is {gt[1]}x{gt[0]}")
        if gt is not None and min(gt) < min_side:
            small.append(f"'{p.gt}' is {gt[1]}x{gt[0]}")
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} result(s) differ in size (WxH) from their ground truth: "
                        + "; ".join(wrong[:_SHOW]) + (" ..." if len(wrong) > _SHOW else "")
                        + "; results must keep the input size")
    if small:
        problems.append(f"{len(small)} image(s) are smaller than {min_side}x{min_side} pixels, which {why} "
                        f"needs: " + "; ".join(small[:_SHOW]) + (" ..." if len(small) > _SHOW else ""))
    if problems:
        raise DataError("; ".join(problems) + " (nothing was scored)")


def stored_channels(path: PathLike) -> Optional[int]:
    """1 for a gray file, 3 for a colour one (alpha not counted), from its header; None where unreadable."""
    try:
        with Image.open(path) as im:
            return 1 if im.mode in _GRAY_MODES else 3
    except Exception:   # any unreadable header: the decode that follows names the file and the reason
        return None


def check_channels(pairs: list[ImagePair]) -> None:
    """DataError listing every pair of a gray and a colour image, read from the headers alone."""
    kind = {1: "gray", 3: "colour"}
    wrong = []
    for p in pairs:
        pred, gt = stored_channels(p.pred), stored_channels(p.gt)
        if pred is not None and gt is not None and pred != gt:
            wrong.append(f"'{p.pred}' is {kind[pred]} but its ground truth '{p.gt}' is {kind[gt]}")
    if wrong:
        raise DataError(f"{len(wrong)} result(s) differ from their ground truth in colour channels: "
                        + "; ".join(wrong[:_SHOW]) + (" ..." if len(wrong) > _SHOW else "")
                        + "; save results with the ground truth's channels (nothing was scored)")
