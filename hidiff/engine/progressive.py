"""Progressive patch/batch schedule of Restormer/HI-Diff (docs/architecture.md 3.2).

The loader always yields full batches of ``max(mini_batch_sizes)`` crops of
``max(gt_sizes)`` pixels.  For iteration ``k`` (1-based) the stage is the first
cumulative group with ``k <= groups[j]`` (the last stage after the end); the
trainer then keeps a random subset of ``mini_batch_sizes[j]`` samples and cuts
*one* ``gt_sizes[j]`` crop position shared by the whole batch, at
``int((P - p) * U[0,1))`` on each axis.  The random draws come from a generator
owned here and checkpointed, seeded from (seed, rank), so resume is exact.
The schedule depends only on the iteration, hence it is the same for any world
size (the sizes are per process, as in BasicSR).
"""
from __future__ import annotations

import bisect
from typing import Any, Sequence

import numpy as np
import torch

from hidiff.errors import ConfigError


class ProgressiveSchedule:
    """Per-iteration (patch size, mini-batch) and the subset/crop of one batch."""

    def __init__(self, iters: Sequence[int], gt_sizes: Sequence[int], mini_batch_sizes: Sequence[int], *,
                 seed: int, rank: int = 0, where: str = "datasets.train") -> None:
        if not (len(iters) == len(gt_sizes) == len(mini_batch_sizes)) or not iters:
            raise ConfigError(f"{where}: iters, gt_sizes and mini_batch_sizes must be non-empty lists of the same "
                              f"length, got {len(iters)}, {len(gt_sizes)}, {len(mini_batch_sizes)}")
        if any(int(v) <= 0 for v in list(iters) + list(gt_sizes) + list(mini_batch_sizes)):
            raise ConfigError(f"{where}: iters, gt_sizes and mini_batch_sizes must be positive")
        self.iters = [int(v) for v in iters]
        self.gt_sizes = [int(v) for v in gt_sizes]
        self.mini_batch_sizes = [int(v) for v in mini_batch_sizes]
        self.groups = list(np.cumsum(self.iters).tolist())
        self.max_size = max(self.gt_sizes)
        self.max_batch = max(self.mini_batch_sizes)
        self.rng = np.random.default_rng([int(seed), int(rank), 0x9A7C4])

    @property
    def total(self) -> int:
        return self.groups[-1]

    def stage(self, k: int) -> int:
        return min(bisect.bisect_left(self.groups, int(k)), len(self.groups) - 1)

    def sizes(self, k: int) -> tuple[int, int]:
        """(patch, per-process mini-batch) of iteration ``k``."""
        j = self.stage(k)
        return self.gt_sizes[j], self.mini_batch_sizes[j]

    def apply(self, batch: dict[str, Any], k: int) -> dict[str, Any]:
        """Subset and crop every (B,C,H,W) tensor of ``batch`` for iteration ``k``.

        Non-tensor entries (paths, keys) follow the same subset.  Every image
        tensor must have the gt's spatial size (deblurring: scale 1).
        """
        gt = batch["gt"]
        b, _, h, w = gt.shape
        patch, mini = self.sizes(k)
        if h < patch or w < patch:
            raise ConfigError(f"progressive schedule: iteration {k} needs {patch}px crops but the loader yields "
                              f"{h}x{w}; set gt_size to max(gt_sizes) = {self.max_size}")
        idx = None
        if mini < b:
            idx = np.sort(self.rng.choice(b, size=mini, replace=False))
        y0 = x0 = 0
        if patch < h or patch < w:
            y0 = int((h - patch) * self.rng.random())
            x0 = int((w - patch) * self.rng.random())
        out = {}
        for key, val in batch.items():
            if idx is not None:
                val = val[torch.as_tensor(idx)] if torch.is_tensor(val) else _take(val, idx)
            if torch.is_tensor(val) and val.dim() == 4:
                if tuple(val.shape[-2:]) != (h, w):
                    raise ConfigError(f"progressive schedule: batch['{key}'] is {tuple(val.shape[-2:])} but gt is "
                                      f"{(h, w)}; only same-size pairs (scale 1) are supported")
                val = val[..., y0:y0 + patch, x0:x0 + patch]
            out[key] = val
        return out

    def describe(self) -> list[dict[str, int]]:
        """One row per stage: first/last iteration, patch and per-process batch (for the log)."""
        rows, start = [], 1
        for end, p, m in zip(self.groups, self.gt_sizes, self.mini_batch_sizes):
            rows.append({"from": start, "to": end, "patch": p, "batch": m})
            start = end + 1
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


def _take(val: Any, idx: np.ndarray) -> Any:
    if isinstance(val, (list, tuple)):
        return type(val)(val[i] for i in idx)
    return val
