"""Per-set summaries of per-image metric rows: means, counts and flagged images.

A row is ``{"name": <image>, <column>: float | bool, ...}``.  Float columns are
averaged over images (``inf`` PSNRs make the mean ``inf``, as MATLAB would); bool
columns (e.g. ``ecc_converged``) are counted and the images where they are False
are listed, so an alignment failure is never hidden inside a mean.  ``scene_means`` gives
the same means per scene (DPDD's indoor/outdoor split, docs/protocols.md).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from hidiff.errors import DataError


def metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every non-``name`` column of ``rows``, in first-seen order."""
    cols: list[str] = []
    for row in rows:
        for key in row:
            if key != "name" and key not in cols:
                cols.append(key)
    return cols


def _mean(values: Iterable[float]) -> float:
    vals = np.asarray([float(v) for v in values], dtype=np.float64)
    if vals.size == 0:
        return math.nan
    with np.errstate(invalid="ignore"):
        return float(np.mean(vals))


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"n_images", "means": {col: mean}, "flags": {col: {"n_true", "n_false", "false"}}}``."""
    means: dict[str, float] = {}
    flags: dict[str, dict[str, Any]] = {}
    for col in metric_columns(rows):
        present = [r for r in rows if col in r]
        if all(isinstance(r[col], (bool,)) for r in present):
            false = [str(r.get("name", i)) for i, r in enumerate(present) if not r[col]]
            flags[col] = {"n_true": len(present) - len(false), "n_false": len(false), "false": false}
        elif all(isinstance(r[col], (int, float)) for r in present):
            means[col] = _mean(r[col] for r in present)
    return {"n_images": len(rows), "means": means, "flags": flags}


def scene_means(rows: Sequence[Mapping[str, Any]], scenes: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``{scene: {"n_images", "means"}}`` over the rows of each scene, scenes sorted by name;
    ``scenes`` maps an image name to its scene, and a row without one is an error."""
    unlabelled = [str(r.get("name")) for r in rows if r.get("name") not in scenes]
    if unlabelled:
        raise DataError(f"no scene label for {len(unlabelled)} image(s): {', '.join(unlabelled[:10])}")
    out: dict[str, dict[str, Any]] = {}
    for scene in sorted({scenes[r["name"]] for r in rows}):
        part = summarize([r for r in rows if scenes[r["name"]] == scene])
        out[scene] = {"n_images": part["n_images"], "means": part["means"]}
    return out
