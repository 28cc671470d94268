"""A qualitative comparison figure: blurry | output | ground truth (or any panels), with zoomed crops.

The top row shows the full images side by side with each crop outlined in its own
colour; every crop then gets a row of the same region of each image enlarged
(nearest neighbour, so pixels stay visible) to the panel width.  Written as a PNG,
atomically.  ``make_grid`` takes any number of same-sized panels (a before/after
picture without ground truth); ``make_comparison_grid`` is its three-panel case.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from hidiff.data.image_io import PathLike, float_to_uint8
from hidiff.errors import DataError
from hidiff.utils.atomic import atomic_write_bytes

Crop = tuple[int, int, int, int]  # top, left, height, width
_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))
_HEADER = 28
_GAP = 4


def _to_uint8(img: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise DataError(f"comparison grid: {what} must be HxWx3 RGB, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return np.rint(a.astype(np.float64) / 257.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        return float_to_uint8(a)
    raise DataError(f"comparison grid: {what} has unsupported dtype {a.dtype}")


def default_crop(height: int, width: int) -> Crop:
    """A centred square crop with a side of a quarter of the short side (at least 8 px)."""
    side = max(8, min(height, width) // 4)
    side = min(side, height, width)
    return ((height - side) // 2, (width - side) // 2, side, side)


def _label(panel_w: int, text: str) -> np.ndarray:
    strip = np.full((_HEADER, panel_w, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, _HEADER - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def _hstack(panels: Sequence[np.ndarray]) -> np.ndarray:
    h = panels[0].shape[0]
    gap = np.full((h, _GAP, 3), 255, np.uint8)
    out = [panels[0]]
    for p in panels[1:]:
        out += [gap, p]
    return np.concatenate(out, axis=1)


def make_grid(images: Sequence[np.ndarray], labels: Sequence[str],
              crops: Sequence[Crop] | None = None) -> np.ndarray:
    """The figure as an RGB uint8 array (see module docstring); crops are (top, left, h, w)."""
    if not images or len(images) != len(labels):
        raise DataError(f"comparison grid: {len(images)} images for {len(labels)} labels; give one label each")
    imgs = [_to_uint8(x, n) for x, n in zip(images, labels)]
    if len({i.shape for i in imgs}) != 1:
        raise DataError(f"comparison grid: images differ in size: {[i.shape for i in imgs]}")
    h, w = imgs[0].shape[:2]
    crops = list(crops) if crops is not None else [default_crop(h, w)]
    for c in crops:
        top, left, ch, cw = (int(v) for v in c)
        if ch <= 0 or cw <= 0 or top < 0 or left < 0 or top + ch > h or left + cw > w:
            raise DataError(f"comparison grid: crop {tuple(c)} (top, left, height, width) is outside the {h}x{w} image")
    thick = max(1, min(h, w) // 200)
    framed = [i.copy() for i in imgs]
    for k, (top, left, ch, cw) in enumerate(crops):
        for f in framed:
            cv2.rectangle(f, (left, top), (left + cw - 1, top + ch - 1), _COLOURS[k % len(_COLOURS)], thick)
    rows = [_hstack([_label(w, t) for t in labels]), _hstack(framed)]
    for k, (top, left, ch, cw) in enumerate(crops):
        zh = max(1, round(ch * w / cw))
        zoomed = []
        for img in imgs:
            z = cv2.resize(img[top:top + ch, left:left + cw], (w, zh), interpolation=cv2.INTER_NEAREST)
            cv2.rectangle(z, (0, 0), (w - 1, zh - 1), _COLOURS[k % len(_COLOURS)], max(2, thick))
            zoomed.append(z)
        rows.append(_hstack(zoomed))
    sep = np.full((_GAP, rows[0].shape[1], 3), 255, np.uint8)
    out = [rows[0]]
    for r in rows[1:]:
        out += [sep, r]
    return np.concatenate(out, axis=0)


def make_comparison_grid(blurry: np.ndarray, output: np.ndarray, gt: np.ndarray,
                         crops: Sequence[Crop] | None = None,
                         labels: Sequence[str] = ("blurry", "output", "ground truth")) -> np.ndarray:
    """blurry | output | ground truth (:func:`make_grid` with three panels)."""
    return make_grid((blurry, output, gt), labels, crops)


def write_grid(path: PathLike, grid: np.ndarray) -> None:
    """Write a figure (RGB uint8) to ``path`` as PNG, atomically."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(grid[:, :, ::-1]))
    if not ok:
        raise DataError(f"comparison grid: PNG encoding failed for '{path}'")
    atomic_write_bytes(path, buf.tobytes())


def write_comparison_grid(path: PathLike, blurry: np.ndarray, output: np.ndarray, gt: np.ndarray,
                          crops: Sequence[Crop] | None = None,
                          labels: Sequence[str] = ("blurry", "output", "ground truth")) -> np.ndarray:
    """Write the comparison figure to ``path`` as PNG (atomically) and return it."""
    grid = make_comparison_grid(blurry, output, gt, crops, labels)
    write_grid(path, grid)
    return grid
