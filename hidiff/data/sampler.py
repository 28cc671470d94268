"""``ResumableSampler``: seeded, distributed, enlargeable, and exactly resumable.

Per epoch ``e`` the order is a permutation drawn from a ``torch.Generator``
seeded by ``(seed, e)``.  (BasicSR's ``EnlargedSampler`` seeds by the epoch
alone, so runs with different seeds see the same order.)  The permutation is
padded by wrapping around to a multiple of ``world_size`` and rank ``r`` takes
positions ``r::world_size``, so ranks are disjoint up to the padding and
together cover every index.

Indices run over ``dataset_len * enlarge_ratio``; datasets map index ``i`` to
item ``i % len`` but draw their randomness from the full index, so the copies
of an item in an enlarged epoch get different crops.  Each element is an
``(index, epoch)`` tuple: the epoch is the token of the per-sample generator.

Resume: ``state_dict(consumed)`` records the epoch and how many samples of it
this rank has consumed; after ``load_state_dict`` the iterator yields exactly
the remaining part of the same order.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Sampler

from hidiff.errors import ConfigError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch generator seeded from the pair (seed, epoch) through numpy's SeedSequence."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return g


class ResumableSampler(Sampler):
    """Yields ``(index, epoch)`` for this rank's share of one epoch.

    Args:
        dataset_len: number of items in the dataset.
        seed: base seed; the order of epoch ``e`` depends on ``(seed, e)``.
        world_size, rank: distributed layout; each rank gets ``ceil(len * ratio / world_size)`` samples.
        shuffle: random order per epoch, or ``0, 1, 2, ...``.
        enlarge_ratio: repeat the dataset this many times per epoch (BasicSR's ``dataset_enlarge_ratio``).
    """

    def __init__(self, dataset_len: int, *, seed: int, world_size: int = 1, rank: int = 0,
                 shuffle: bool = True, enlarge_ratio: int = 1) -> None:
        if dataset_len <= 0:
            raise ConfigError(f"ResumableSampler: the dataset is empty (dataset_len={dataset_len})")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"ResumableSampler: need 0 <= rank < world_size, got rank={rank}, "
                              f"world_size={world_size}")
        if isinstance(enlarge_ratio, bool) or not isinstance(enlarge_ratio, int) or enlarge_ratio < 1:
            raise ConfigError(f"dataset_enlarge_ratio must be a positive integer, got {enlarge_ratio!r}")
        self.dataset_len = int(dataset_len)
        self.seed = int(seed)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.enlarge_ratio = enlarge_ratio
        self.total_len = self.dataset_len * enlarge_ratio
        self.num_samples = math.ceil(self.total_len / self.world_size)
        self.epoch = 0
        self.start = 0
        self._yielded = 0

    def epoch_order(self, epoch: Optional[int] = None) -> list[int]:
        """This rank's full index order of ``epoch`` (default: the current one)."""
        e = self.epoch if epoch is None else int(epoch)
        if self.shuffle:
            order = torch.randperm(self.total_len, generator=epoch_generator(self.seed, e)).tolist()
        else:
            order = list(range(self.total_len))
        padded = self.num_samples * self.world_size
        order = (order * math.ceil(padded / len(order)))[:padded]
        return order[self.rank::self.world_size]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a different epoch starts from its beginning.

        Setting the epoch that is already current keeps the resume position,
        so a trainer may call ``set_epoch`` after ``load_state_dict``.
        """
        epoch = int(epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.start = 0

    def skip(self, n: int) -> None:
        """Start the current epoch at position ``n`` (samples already consumed)."""
        if not 0 <= n <= self.num_samples:
            raise ValueError(f"cannot skip {n} samples of an epoch of {self.num_samples}")
        self.start = int(n)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, order = self.epoch, self.epoch_order()
        self._yielded = 0
        for index in order[self.start:]:
            self._yielded += 1
            yield index, epoch

    def __len__(self) -> int:
        """Samples left in the current epoch (all of them unless resumed mid-epoch)."""
        return self.num_samples - self.start

    def state_dict(self, consumed: Optional[int] = None) -> dict:
        """Position to save in a checkpoint.

        ``consumed`` is the number of samples the caller has *used* since the
        current iteration began (e.g. ``iterations_this_pass * batch_size``).
        Pass it whenever the sampler feeds a DataLoader: workers read indices
        ahead, so the count of indices handed out (the fallback) overshoots.
        """
        used = self._yielded if consumed is None else int(consumed)
        position = self.start + used
        if not 0 <= position <= self.num_samples:
            raise ValueError(f"consumed={consumed} puts the position at {position}, outside 0..{self.num_samples}")
        return {"epoch": self.epoch, "consumed": position, "seed": self.seed, "world_size": self.world_size,
                "dataset_len": self.dataset_len, "enlarge_ratio": self.enlarge_ratio, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by :meth:`state_dict` (the layout must match)."""
        for key in ("seed", "world_size", "dataset_len", "enlarge_ratio", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ConfigError(f"cannot resume the data order: the checkpoint has {key}={state[key]!r}, "
                                  f"this run has {key}={getattr(self, key)!r}; an exact resume needs the same "
                                  f"data layout")
        self.epoch = int(state["epoch"])
        self.skip(int(state["consumed"]))
