"""Score a folder of results against a folder of ground truth with one protocol.

Works for any method's outputs: pairs are matched by file name, images are read at
their stored bit depth and scored by the protocol's metric variants.  For the protocols
whose metrics are defined on uint8 images (gopro, basic), a 16-bit image is first rounded
to 8 bits, ``round(x / 257)``, exactly as saving it as an 8-bit file would; the log and
the summary's protocol description say so.  A gray image paired with a colour one is
refused before anything is scored.  Images whose RealBlur alignment failed are logged and
listed in the summary.
"""
from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from hidiff.data.image_io import PathLike, read_rgb
from hidiff.errors import DataError
from hidiff.evaluation.pairing import ImagePair, check_channels, pair_by_name
from hidiff.evaluation.protocols import Protocol, default_protocol_for, get_protocol
from hidiff.evaluation.summary import summarize
from hidiff.utils.progress import Progress

log = logging.getLogger(__name__)


def to_8bit(img: np.ndarray) -> np.ndarray:
    """A uint16 image rounded to uint8 as an 8-bit save would: ``round(x / 257)``; uint8 unchanged."""
    return np.rint(img / 257.0).astype(np.uint8) if img.dtype == np.uint16 else img


def _score(protocol: Protocol, pair: ImagePair) -> tuple[dict[str, Any], list[Path]]:
    """The row of one pair and the 16-bit files of it that were rounded to 8 bits."""
    pred, gt = read_rgb(pair.pred), read_rgb(pair.gt)
    if pred.shape != gt.shape:
        raise DataError(f"'{pair.pred}' is {pred.shape[1]}x{pred.shape[0]} but its ground truth "
                        f"'{pair.gt}' is {gt.shape[1]}x{gt.shape[0]}; results must keep the input size")
    rounded = []
    if protocol.uint8_metrics:
        rounded = [p for p, img in ((pair.pred, pred), (pair.gt, gt)) if img.dtype == np.uint16]
        pred, gt = to_8bit(pred), to_8bit(gt)
    try:
        scores = protocol.score_pair(pred, gt)
    except DataError as exc:
        raise DataError(f"{pair.name} ('{pair.pred}' vs '{pair.gt}'): {exc}") from None
    return {"name": pair.name, **scores}, rounded


def score_image_pair(protocol: Protocol, pair: ImagePair) -> dict[str, Any]:
    """Read one pair and return its row ``{"name": ..., <column>: value, ...}`` (16-bit images rounded to 8 bits
    for a protocol with ``uint8_metrics``)."""
    return _score(protocol, pair)[0]


_GT_FOLDER_NAMES = {"target", "targets", "gt", "groundtruth", "ground_truth", "sharp", "hr"}


def guess_set_name(gt_dir: PathLike) -> str:
    """A display name for a ground-truth folder: ``.../RealBlur_J/target`` -> ``RealBlur_J``."""
    p = Path(gt_dir).resolve()
    return p.parent.name if p.name.lower() in _GT_FOLDER_NAMES and p.parent.name else p.name


def _score_star(args: tuple[Protocol, ImagePair]) -> tuple[dict[str, Any], list[Path]]:
    return _score(*args)


def _init_worker() -> None:
    """One thread per worker process: the processes already use every core."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def evaluate_folders(pred_dir: PathLike, gt_dir: PathLike, protocol: str | Protocol | None = None,
                     set_name: str | None = None, check_count: bool = True, workers: int = 1,
                     progress: bool = True) -> tuple[list[dict], dict]:
    """Score every same-named image pair; returns ``(rows, summary)``.

    ``progress``: a bar with ETA on a terminal (silent otherwise).

    ``protocol`` defaults to the one of ``set_name`` (``default_protocol_for``);
    ``set_name`` also selects the expected image count (e.g. 980 for RealBlur_J).
    """
    if protocol is None:
        protocol = default_protocol_for(set_name)
    proto = get_protocol(protocol)
    pairs = pair_by_name(pred_dir, gt_dir, set_name=set_name, check_count=check_count)
    check_channels(pairs)
    rows: list[dict] = []
    rounded: list[Path] = []
    bar = Progress(len(pairs), desc=f"scoring {set_name or guess_set_name(gt_dir)}", unit="img", enabled=progress)
    if workers > 1 and len(pairs) > 1:
        # 'spawn', not fork: forking after torch has used its thread pool can deadlock the children.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
            results = pool.map(_score_star, [(proto, p) for p in pairs], chunksize=4)
            for row, files in results:
                rows.append(row)
                rounded += files
                bar.update(1)
    else:
        for pair in pairs:
            row, files = _score(proto, pair)
            rows.append(row)
            rounded += files
            bar.update(1)
    bar.close()
    description = proto.describe()
    if rounded:
        note = (f"{len(rounded)} 16-bit image file(s) rounded to 8 bits, round(x/257) as an 8-bit save would, "
                f"for the uint8 metrics")
        log.warning("%s vs %s: %s (the first: '%s')", pred_dir, gt_dir, note, rounded[0])
        description += f" [{note}]"
    for row in rows:
        if row.get("ecc_converged") is False:
            log.warning("%s: ECC alignment did not converge; scored unaligned (ecc_converged=False)", row["name"])
    summary = {
        "set": set_name or guess_set_name(gt_dir),
        "protocol": proto.name,
        "protocol_description": description,
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        **summarize(rows),
    }
    return rows, summary
