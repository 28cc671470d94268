"""Best validation scores: track the best value of every metric, save ``net_<x>_best.pth`` on a new best.

The key metric (``val.key_metric``, else the first metric) on the first
validation set decides when the best networks are saved.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Optional

from hidiff.engine import distributed as D
from hidiff.engine.checkpoint_store import CheckpointStore
from hidiff.errors import CheckpointError

#: validation result entries that are counts, not metrics
COUNTS = ("images", "images_skipped")


def update_best(best: dict[str, dict[str, Any]], results: dict[str, dict[str, float]], it: int, val) -> bool:
    """Record every improved metric in ``best``; True if the key metric improved."""
    key_metric = val.key_metric or next(iter(val.metrics), None)
    key_set = next(iter(results), None)
    improved = False
    for set_name, vals in results.items():
        for m, v in vals.items():
            if m in COUNTS or m not in val.metrics or math.isnan(v):
                continue
            higher = val.metrics[m].better == "higher"
            tag = f"{set_name}/{m}"
            old = best.get(tag)
            if old is None or (v > old["value"] if higher else v < old["value"]):
                best[tag] = {"value": float(v), "iter": int(it)}
                improved |= (set_name == key_set and m == key_metric)
    return improved


def save_best(store: CheckpointStore, payloads: Callable[[], dict], best: dict[str, dict[str, Any]], it: int,
              val, key_set: str, is_main: bool, log: logging.Logger) -> None:
    """Rank 0 writes the best networks and ``best.json``; every rank learns whether it worked."""
    error: Optional[str] = None
    if is_main:
        try:
            key_metric = val.key_metric or next(iter(val.metrics))
            info = {"iter": it, "set": key_set, "metric": key_metric,
                    "value": best[f"{key_set}/{key_metric}"]["value"]}
            store.save_tagged("best", payloads(), info)
            log.info("new best %s on %s: %.4f; saved net_<x>_best.pth", key_metric, key_set, info["value"])
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    error = D.broadcast_object(error)
    if error is not None:
        raise CheckpointError(f"saving the best checkpoint at iteration {it} failed: {error}")
