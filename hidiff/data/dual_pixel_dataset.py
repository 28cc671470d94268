"""``DualPixelDataset``: DPDD (Abuolaim & Brown, ECCV 2020) defocus-deblurring pairs.

Layout (what ``scripts/prepare_data.py dpdd`` writes, the Restormer layout)::

    <dataroot>/{train,val,test}/{inputC,inputL,inputR,target}/<stem>.png

``dataroot`` may also point straight at one split folder.  View files may carry
the official ``_L``/``_R`` suffix (``<stem>_L.png``); pairing is by the stem
without it.  Images are 16-bit PNGs, read as float in [0, 1] (÷ 65535), so
nothing is quantised.

``dual_pixel: true`` gives a 6-channel input, the two views stacked in
``view_order`` (``LR``, Restormer's order, by default; the shipped Swintormer
uses ``RL``); ``false`` gives the 3-channel combined view ``inputC``.  ``blurry_view(i)`` is the
blurry image a report scores and shows as the input: ``inputC`` when every image has one,
else the first stacked view, named as such.  As in
Restormer and Swintormer (docs/quirks.md, quirk S12) the dihedral augmentation
rotates/flips the views without swapping them.

Indoor/outdoor split of the 76 test images (37/39): defined, as in Restormer's
evaluation, by ``indoor_labels.npy`` and ``outdoor_labels.npy`` (1-based
indices into the naturally sorted test image names), which ship with the
Restormer copy of the DPDD test set.  They are looked up in the split folder,
then in ``dataroot``, or in the folder/JSON file given as ``scene_labels``
(JSON: ``{"<stem>": "indoor"|"outdoor"}``).  ``.txt`` files with the same
numbers are accepted in place of ``.npy``.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from hidiff.data.image_io import list_images, read_image, stored_size
from hidiff.data.pair_dataset_base import PairDatasetBase, PairSizes
from hidiff.data.pairing import pair_keys
from hidiff.data.transforms import to_tensor
from hidiff.errors import ConfigError, DataError
from hidiff.registry import DATASET_REGISTRY

logger = logging.getLogger(__name__)

VIEW_FOLDERS = {"C": "inputC", "L": "inputL", "R": "inputR"}
SCENES = ("indoor", "outdoor")
DPDD_TEST_SPLIT = (37, 39)
_VIEW_SUFFIX = re.compile(r"_(?:L|R|C)$", re.IGNORECASE)


def natural_key(text: str) -> list:
    """Sort key that orders embedded numbers numerically (``img2`` before ``img10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def view_stem(stem: str) -> str:
    """Stem without a trailing ``_L``/``_R``/``_C`` view suffix."""
    return _VIEW_SUFFIX.sub("", stem)


def _index_view_folder(folder: Path, dataset: str, key=view_stem) -> dict[str, str]:
    """``{key: path}`` of ``folder``'s images (key: the stem without a view suffix); two files of one key are
    refused, since which one pairs is not for us to guess."""
    out: dict[str, str] = {}
    for p in list_images(folder):
        k = key(p.stem)
        if k in out:
            raise DataError(f"dataset '{dataset}': '{folder}' holds two files for the stem '{k}': "
                            f"'{Path(out[k]).name}' and '{p.name}'")
        out[k] = str(p)
    return out


def _read_label_file(folder: Path, scene: str) -> Optional[list[int]]:
    npy, txt = folder / f"{scene}_labels.npy", folder / f"{scene}_labels.txt"
    if npy.is_file():
        return [int(v) for v in np.load(npy, allow_pickle=False).ravel()]
    if txt.is_file():
        return [int(v) for v in re.findall(r"-?\d+", txt.read_text(encoding="utf-8"))]
    return None


def load_scene_labels(candidates: list[Path], keys: list[str], dataset: str) -> dict[str, str]:
    """``{key: 'indoor'|'outdoor'}`` from the first candidate that holds labels (see module doc)."""
    for cand in candidates:
        if cand.is_file() and cand.suffix == ".json":
            mapping = json.loads(cand.read_text(encoding="utf-8"))
            bad = {k: v for k, v in mapping.items() if v not in SCENES}
            if bad:
                raise DataError(f"{cand}: scene labels must be 'indoor' or 'outdoor', got {bad}")
            missing = [k for k in keys if k not in mapping]
            if missing:
                raise DataError(f"{cand}: no scene label for {len(missing)} image(s): {missing[:5]}")
            return {k: mapping[k] for k in keys}
        if not cand.is_dir():
            continue
        lists = {s: _read_label_file(cand, s) for s in SCENES}
        if lists["indoor"] is None and lists["outdoor"] is None:
            continue
        if lists["indoor"] is None or lists["outdoor"] is None:
            raise DataError(f"dataset '{dataset}': '{cand}' has only one of indoor_labels/outdoor_labels")
        order = sorted(keys, key=natural_key)
        n = len(order)
        labels: dict[str, str] = {}
        for scene in SCENES:
            for i in lists[scene]:
                if not 1 <= i <= n:
                    raise DataError(f"dataset '{dataset}': {scene}_labels in '{cand}' has the index {i}, "
                                    f"outside 1..{n} (1-based, over the naturally sorted test images)")
                if order[i - 1] in labels:
                    raise DataError(f"dataset '{dataset}': image index {i} is both indoor and outdoor in '{cand}'")
                labels[order[i - 1]] = scene
        unlabelled = [k for k in order if k not in labels]
        if unlabelled:
            raise DataError(f"dataset '{dataset}': {len(unlabelled)} test image(s) have no indoor/outdoor "
                            f"label in '{cand}': {unlabelled[:5]}")
        counts = (len(lists["indoor"]), len(lists["outdoor"]))
        if n == sum(DPDD_TEST_SPLIT) and counts != DPDD_TEST_SPLIT:
            logger.warning("dataset '%s': indoor/outdoor split is %d/%d, DPDD's is %d/%d",
                           dataset, *counts, *DPDD_TEST_SPLIT)
        return labels
    where = ", ".join(str(c) for c in candidates)
    raise DataError(f"dataset '{dataset}': no indoor/outdoor labels found (looked in {where}); put "
                    f"indoor_labels.npy and outdoor_labels.npy (1-based indices, shipped with the "
                    f"Restormer DPDD test set) in the test folder, or pass scene_labels")


@DATASET_REGISTRY.register()
class DualPixelDataset(PairDatasetBase):
    """DPDD pairs: 6-channel dual-pixel input (or the 3-channel combined view) and target.

    Args:
        dataroot: DPDD root holding ``train/``, ``val/``, ``test/`` (or one split folder).
        phase: ``'train'``, ``'val'`` or ``'test'``.
        split: which split folder to read (default: the phase name).
        dual_pixel: 6-channel L/R input if true, else ``inputC``.
        view_order: ``'LR'`` or ``'RL'``: order of the stacked views.
        gt_size, geometric_augs, seed, skip_corrupt: as in ``PairedImageDataset``.
        scene_labels: folder or JSON file with the indoor/outdoor split (test set).
        name: dataset name used in messages.
    """

    def __init__(self, dataroot: str, phase: str, split: Optional[str] = None, dual_pixel: bool = True,
                 view_order: str = "LR", gt_size: Optional[int] = None, geometric_augs: bool = True,
                 seed: int = 0, skip_corrupt: bool = False, scene_labels: Optional[str] = None,
                 name: str = "DPDD") -> None:
        super().__init__(phase=phase, gt_size=gt_size, geometric_augs=geometric_augs, seed=seed,
                         skip_corrupt=skip_corrupt, name=name)
        if view_order not in ("LR", "RL"):
            raise ConfigError(f"dataset '{name}': view_order must be 'LR' or 'RL', got {view_order!r}")
        self.dual_pixel = bool(dual_pixel)
        self.view_order = view_order
        self.split = split or phase
        base = Path(dataroot)
        if (base / self.split).is_dir():
            self.root = base / self.split
        elif (base / "target").is_dir():
            self.root = base
        else:
            raise DataError(f"dataset '{name}' (phase {phase}): neither '{base / self.split}' nor "
                            f"'{base / 'target'}' exists; expected <dataroot>/{{train,val,test}}/"
                            f"{{inputC,inputL,inputR,target}}")
        self.dataroot = base
        views = list(view_order) if self.dual_pixel else ["C"]
        gt_dir = self.root / "target"
        self._gt = _index_view_folder(gt_dir, name, key=lambda stem: stem)
        self._views: list[dict[str, str]] = []
        for v in views:
            folder = self.root / VIEW_FOLDERS[v]
            index = _index_view_folder(folder, name)
            pair_keys(list(index), list(self._gt), dataset=name, phase=phase, lq_root=str(folder),
                      gt_root=str(gt_dir))
            self._views.append(index)
        self.keys = sorted(self._gt)
        self.num_pairs = len(self.keys)
        self._combined: Optional[dict[str, str]] = self._views[0] if not self.dual_pixel else None
        self._scene_labels = Path(scene_labels) if scene_labels else None
        self._scenes: Optional[dict[str, str]] = None

    def size_problems(self) -> list[str]:
        """Pairs whose views and target differ in size, and targets smaller than ``gt_size``, from the image
        headers of every view and target (no decoding), so they stop the run at start, not when drawn."""
        problems = []
        for key, views, target in self.pair_sizes():
            paths, sizes = [list(x) for x in zip(*views, target)]
            if any(size is None for size in sizes):
                continue    # unreadable: the read says why (and skip_corrupt decides)
            if len(set(sizes)) != 1:
                problems.append(f"the images of '{key}' differ in size: " + ", ".join(
                    f"'{p}' is {h}x{w}" for p, (h, w) in zip(paths, sizes)) + " (HxW); the views and the target "
                    f"of a pair must have one size")
            elif self.gt_size is not None and min(sizes[-1]) < self.gt_size:
                h, w = sizes[-1]
                problems.append(f"'{paths[-1]}' is {h}x{w}, smaller than the crop size {self.gt_size}")
        return problems

    def pair_sizes(self, n: Optional[int] = None) -> list[PairSizes]:
        """The views (in stacking order) and the target of the first ``n`` pairs, with their header sizes."""
        return [(key, [(index[key], stored_size(index[key])) for index in self._views],
                 (self._gt[key], stored_size(self._gt[key]))) for key in self.keys[:n]]

    def read_pair(self, i: int) -> tuple[np.ndarray, np.ndarray, str, str, str]:
        key = self.keys[i]
        views = [read_image(index[key]) for index in self._views]
        shapes = {v.shape for v in views}
        if len(shapes) != 1:
            raise DataError(f"dataset '{self.name}': the views of '{key}' differ in size: "
                            f"{[index[key] for index in self._views]}")
        lq = views[0] if len(views) == 1 else np.concatenate(views, axis=2)
        return lq, read_image(self._gt[key]), self._views[0][key], self._gt[key], key

    def blurry_view(self, i: int) -> tuple[torch.Tensor, str]:
        """``(3xHxW image, its folder)`` of pair ``i`` as a report shows the input: ``inputC`` (the blurry
        combined view) when every image has one, else the first view of ``view_order`` (e.g. ``inputR``)."""
        key = self.keys[i]
        if self._combined is None:  # indexed on first use: training never needs it
            folder = self.root / VIEW_FOLDERS["C"]
            index = _index_view_folder(folder, self.name) if folder.is_dir() else {}
            self._combined = index if all(k in index for k in self.keys) else {}
        if self._combined:
            return to_tensor(read_image(self._combined[key])), VIEW_FOLDERS["C"]
        return to_tensor(read_image(self._views[0][key])), VIEW_FOLDERS[self.view_order[0]]

    def scenes(self) -> dict[str, str]:
        """``{key: 'indoor'|'outdoor'}`` for every image (loaded once)."""
        if self._scenes is None:
            cands = [self._scene_labels] if self._scene_labels else [self.root, self.dataroot]
            self._scenes = load_scene_labels(cands, self.keys, self.name)
        return self._scenes

    def scene_of(self, key: str) -> str:
        """``'indoor'`` or ``'outdoor'`` for a test image stem."""
        scenes = self.scenes()
        if key not in scenes:
            raise DataError(f"dataset '{self.name}': unknown image key '{key}'")
        return scenes[key]
