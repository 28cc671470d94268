"""Score a folder of results against a folder of ground truth with one protocol.

Works for any method's outputs: pairs are matched by file name, images are read at
their stored bit depth and scored by the protocol's metric variants.  Images whose
RealBlur alignment failed are logged and listed in the summary.
"""
from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import torch

from hidiff.data.image_io import PathLike, read_rgb
from hidiff.errors import DataError
from hidiff.evaluation.pairing import ImagePair, pair_by_name
from hidiff.evaluation.protocols import Protocol, default_protocol_for, get_protocol
from hidiff.evaluation.summary import summarize
from hidiff.utils.progress import Progress

log = logging.getLogger(__name__)


def score_image_pair(protocol: Protocol, pair: ImagePair) -> dict[str, Any]:
    """Read one pair and return its row ``{"name": ..., <column>: value, ...}``."""
    pred, gt = read_rgb(pair.pred), read_rgb(pair.gt)
    if pred.shape != gt.shape:
        raise DataError(f"'{pair.pred}' is {pred.shape[1]}x{pred.shape[0]} but its ground truth "
                        f"'{pair.gt}' is {gt.shape[1]}x{gt.shape[0]}; results must keep the input size")
    try:
        scores = protocol.score_pair(pred, gt)
    except DataError as exc:
        raise DataError(f"{pair.name}: {exc}") from None
    return {"name": pair.name, **scores}


_GT_FOLDER_NAMES = {"target", "targets", "gt", "groundtruth", "ground_truth", "sharp", "hr"}


def guess_set_name(gt_dir: PathLike) -> str:
    """A display name for a ground-truth folder: ``.../RealBlur_J/target`` -> ``RealBlur_J``."""
    p = Path(gt_dir).resolve()
    return p.parent.name if p.name.lower() in _GT_FOLDER_NAMES and p.parent.name else p.name


def _score_star(args: tuple[Protocol, ImagePair]) -> dict[str, Any]:
    return score_image_pair(*args)


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
    rows: list[dict] = []
    bar = Progress(len(pairs), desc=f"scoring {set_name or guess_set_name(gt_dir)}", unit="img", enabled=progress)
    if workers > 1 and len(pairs) > 1:
        # 'spawn', not fork: forking after torch has used its thread pool can deadlock the children.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
            for row in pool.map(_score_star, [(proto, p) for p in pairs], chunksize=4):
                rows.append(row)
                bar.update(1)
    else:
        for pair in pairs:
            rows.append(score_image_pair(proto, pair))
            bar.update(1)
    bar.close()
    for row in rows:
        if row.get("ecc_converged") is False:
            log.warning("%s: ECC alignment did not converge; scored unaligned (ecc_converged=False)", row["name"])
    summary = {
        "set": set_name or guess_set_name(gt_dir),
        "protocol": proto.name,
        "protocol_description": proto.describe(),
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        **summarize(rows),
    }
    return rows, summary
