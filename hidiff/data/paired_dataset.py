"""``PairedImageDataset``: blurry/sharp pairs from two folders or two LMDBs.

Registered also as ``PairedImageIRDataset``, the name HI-Diff's option files
use.  Differences from the official class, all deliberate: pairs are sorted by
key (the official order is ``os.scandir`` order), a val/test size mismatch is
an error instead of silently cropping the target, and unmatched files are
reported by name.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import numpy as np

from hidiff.data.image_source import backend_name, open_source
from hidiff.data.pair_dataset_base import PairDatasetBase, PairSizes
from hidiff.data.pairing import pair_keys
from hidiff.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register()
@DATASET_REGISTRY.register("PairedImageIRDataset")
class PairedImageDataset(PairDatasetBase):
    """Paired images matched by file stem.

    Args:
        dataroot_lq: folder (or ``.lmdb`` store) of blurry inputs.
        dataroot_gt: folder (or ``.lmdb`` store) of sharp targets.
        phase: ``'train'`` (random crop + augmentation) or ``'val'``/``'test'`` (whole images).
        gt_size: training crop size; ``None`` keeps whole images.
        geometric_augs: draw one of the 8 dihedral transforms per training sample.
        filename_tmpl: input stem = ``filename_tmpl.format(target stem)``.
        io_backend: ``'disk'`` or ``'lmdb'`` (BasicSR's ``{type: lmdb}`` is accepted too).
        seed: base of the per-sample generators ``default_rng([seed, epoch, index])``.
        skip_corrupt: in training, replace an unreadable pair by the next readable one
            (counted in ``num_skipped``) instead of stopping with a DataError.
        name: dataset name used in messages.
    """

    def __init__(self, dataroot_lq: str, dataroot_gt: str, phase: str, gt_size: Optional[int] = None,
                 geometric_augs: bool = True, filename_tmpl: str = "{}",
                 io_backend: Union[str, Mapping[str, Any]] = "disk", seed: int = 0,
                 skip_corrupt: bool = False, name: str = "paired") -> None:
        super().__init__(phase=phase, gt_size=gt_size, geometric_augs=geometric_augs, seed=seed,
                         skip_corrupt=skip_corrupt, name=name)
        self.io_backend = backend_name(io_backend)
        self.lq_source = open_source(dataroot_lq, self.io_backend, f"dataset '{name}' dataroot_lq")
        self.gt_source = open_source(dataroot_gt, self.io_backend, f"dataset '{name}' dataroot_gt")
        self.pairs = pair_keys(self.lq_source.keys(), self.gt_source.keys(), filename_tmpl=filename_tmpl,
                               dataset=name, phase=phase, lq_root=str(dataroot_lq), gt_root=str(dataroot_gt))
        self.num_pairs = len(self.pairs)

    @property
    def keys(self) -> list[str]:
        """Target stems in item order."""
        return [gt for _, gt in self.pairs]

    def pair_sizes(self, n: Optional[int] = None) -> list[PairSizes]:
        lq, gt = self.lq_source, self.gt_source
        return [(b, [(lq.path_of(a), lq.size(a))], (gt.path_of(b), gt.size(b))) for a, b in self.pairs[:n]]

    def size_problems(self) -> list[str]:
        problems = []
        for _, [(lq_path, lq)], (gt_path, gt) in self.pair_sizes():
            if lq is None or gt is None:
                continue    # unreadable: the read says why (and skip_corrupt decides)
            if lq != gt:
                problems.append(f"input '{lq_path}' is {lq[0]}x{lq[1]} but target '{gt_path}' is {gt[0]}x{gt[1]}")
            elif self.gt_size is not None and min(gt) < self.gt_size:
                problems.append(f"'{gt_path}' is {gt[0]}x{gt[1]}, smaller than the crop size {self.gt_size}")
        return problems

    def read_pair(self, i: int) -> tuple[np.ndarray, np.ndarray, str, str, str]:
        lq_key, gt_key = self.pairs[i]
        lq = self.lq_source.read(lq_key)
        gt = self.gt_source.read(gt_key)
        return lq, gt, self.lq_source.path_of(lq_key), self.gt_source.path_of(gt_key), gt_key
