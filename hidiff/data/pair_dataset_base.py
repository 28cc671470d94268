"""Shared item logic of the real-pair datasets (folders, LMDB, dual-pixel).

A subclass only says how to read pair ``i`` from storage; this base class does
the rest the same way for all of them: index/epoch handling, per-sample
generators, size checks, training crops and dihedral augmentation, and the
optional replacement of corrupt training images.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from torch.utils.data import Dataset

from hidiff.data.corrupt_skip import SkipCounter, read_or_replace
from hidiff.data.sample_rng import SampleIndex, sample_rng, split_index
from hidiff.data.transforms import paired_random_crop, random_dihedral, to_tensor
from hidiff.errors import ConfigError, DataError

PHASES = ("train", "val", "test")
#: one pair's files and (h, w) header sizes: ``(key, [(input file, size), ...], (target file, size))``
PairSizes = Tuple[str, list, Tuple[str, Optional[Tuple[int, int]]]]


def check_phase(phase: str, dataset: str) -> str:
    """Validate the ``phase`` argument the trainer passes to every dataset."""
    if phase not in PHASES:
        raise ConfigError(f"dataset '{dataset}': phase must be one of {', '.join(PHASES)}, got {phase!r}")
    return phase


def check_gt_size(gt_size: Optional[int], dataset: str) -> Optional[int]:
    if gt_size is None:
        return None
    if isinstance(gt_size, bool) or not isinstance(gt_size, int) or gt_size <= 0:
        raise ConfigError(f"dataset '{dataset}': gt_size must be a positive integer or null, got {gt_size!r}")
    return gt_size


class PairDatasetBase(Dataset):
    """Base class: subclasses set ``self.num_pairs`` and implement :meth:`read_pair`."""

    num_pairs: int = 0

    def __init__(self, *, phase: str, gt_size: Optional[int], geometric_augs: bool, seed: int,
                 skip_corrupt: bool, name: str) -> None:
        self.name = name
        self.phase = check_phase(phase, name)
        self.gt_size = check_gt_size(gt_size, name)
        self.geometric_augs = bool(geometric_augs)
        self.seed = int(seed)
        self.skip_corrupt = bool(skip_corrupt)
        self._skips = SkipCounter()

    def read_pair(self, i: int) -> tuple[np.ndarray, np.ndarray, str, str, str]:
        """Return ``(lq HxWxC, gt HxWx3, lq_path, gt_path, key)`` of pair ``i`` (float32 RGB)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_pairs

    def size_problems(self) -> list[str]:
        """What in the training set cannot give a sample, read from the image headers (no decoding): pairs of
        two sizes, images smaller than the crop.  Found at start, not when the sample is drawn hours later."""
        return []

    def pair_sizes(self, n: Optional[int] = None) -> Optional[list[PairSizes]]:
        """``(key, [(input file, (h, w)), ...], (target file, (h, w)))`` of the first ``n`` pairs (all: None),
        from the image headers, upright as the pairs are read; a size is None where a header cannot be read.
        None where this dataset cannot tell without decoding (its pairs are checked when read)."""
        return None

    @property
    def num_skipped(self) -> int:
        """Corrupt training items replaced so far in this process."""
        return self._skips.count

    def __getitem__(self, index: SampleIndex) -> dict:
        idx, token = split_index(index)
        if self.num_pairs == 0:
            raise IndexError(f"dataset '{self.name}' is empty")
        if self.phase != "train" and idx >= self.num_pairs:
            raise IndexError(f"dataset '{self.name}' (phase {self.phase}) has {self.num_pairs} items, "
                             f"index {idx} requested")
        lq, gt, lq_path, gt_path, key = read_or_replace(
            self.read_pair, idx % self.num_pairs, self.num_pairs, enabled=self.skip_corrupt and self.phase == "train",
            counter=self._skips, dataset=self.name, phase=self.phase)
        if lq.shape[:2] != gt.shape[:2]:
            raise DataError(f"dataset '{self.name}' (phase {self.phase}): input '{lq_path}' is "
                            f"{lq.shape[0]}x{lq.shape[1]} but target '{gt_path}' is "
                            f"{gt.shape[0]}x{gt.shape[1]} (HxW); a pair must have equal sizes")
        if self.phase == "train":
            rng = sample_rng(self.seed, idx, token)
            if self.gt_size is not None:
                lq, gt = paired_random_crop([lq, gt], self.gt_size, rng, what=f"training pair '{gt_path}'")
            if self.geometric_augs:
                lq, gt = random_dihedral([lq, gt], rng)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "lq_path": lq_path, "gt_path": gt_path, "key": key}
