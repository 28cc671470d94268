"""``build_dataloader``: one place that turns a dataset into a (prefetching) loader.

Training loaders draw their order from :class:`ResumableSampler` (seeded,
distributed, resumable); validation/test loaders use batch 1 and the dataset's
key order (rank ``r`` of ``w`` takes items ``r, r + w, ...``).  Workers are
seeded from ``(seed, rank, worker_id)`` (python, numpy and torch), although
our datasets draw their randomness from per-sample generators and do not
depend on it.
"""
from __future__ import annotations

import random
import signal
from functools import partial
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from hidiff.data.prefetch import CPUPrefetcher, CUDAPrefetcher
from hidiff.data.sampler import ResumableSampler
from hidiff.errors import ConfigError, DataError

PREFETCH_MODES = (None, "cpu", "cuda")


def worker_seed(seed: int, rank: int, worker_id: int) -> int:
    """The 32-bit seed of one DataLoader worker, derived from (seed, rank, worker_id)."""
    return int(np.random.SeedSequence([int(seed), int(rank), int(worker_id)]).generate_state(1)[0])


def collate_samples(items: list):
    """``default_collate``, with a batch of tensors of different sizes named by key and size (whole images of
    several sizes, ``gt_size: null``, or non-square ones turned by the 90-degree augmentation), not torch's
    bare 'stack expects each tensor to be equal size'."""
    try:
        return default_collate(items)
    except RuntimeError as exc:
        if "equal size" not in str(exc) or not all(isinstance(i, dict) for i in items):
            raise
        sizes = ", ".join(f"'{i.get('key', '?')}' {'x'.join(map(str, i['gt'].shape[-2:]))}" for i in items
                          if hasattr(i.get("gt"), "shape"))
        raise DataError(f"a batch of {len(items)} samples of different sizes cannot be stacked ({sizes}): give "
                        f"the training set a crop size (gt_size) or batch_size_per_gpu: 1") from None


def seed_worker(worker_id: int, *, seed: int, rank: int) -> None:
    """``worker_init_fn``: leave SIGINT/SIGTERM/SIGHUP to the main process, seed python, numpy and torch.

    Ctrl-C or a closed terminal, ``kill -- -PGID``, ``pkill -f`` and a cluster's job stop signal the workers too.  A
    worker that died of it would make the main process raise at once (PyTorch's SIGCHLD check), before it
    could finish its iteration and save the checkpoint.  The main process ends its workers itself when it
    stops, and a worker whose main process is gone exits on its own (PyTorch's watchdog).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):   # not on Windows
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    s = worker_seed(seed, rank, worker_id)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def build_dataloader(dataset: Dataset, *, phase: str, batch_size: int, num_workers: int, seed: int,
                     rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                     persistent_workers: bool = False, prefetch: Optional[str] = None, drop_last: bool = True,
                     sampler=None, enlarge_ratio: int = 1, shuffle: bool = True, prefetch_depth: int = 2,
                     limit: Optional[int] = None):
    """Build the loader of one dataset.

    Args:
        phase: ``'train'`` uses ``sampler`` (default: a new :class:`ResumableSampler`);
            ``'val'``/``'test'`` force batch 1, no shuffling, no dropped items.
        batch_size: per-process batch size (training).
        num_workers: DataLoader worker processes (0 = load in the main process).
        seed: seeds the sampler order and the workers.
        rank, world_size: distributed layout.
        pin_memory: page-locked host batches (switched on by ``prefetch='cuda'``).
        persistent_workers: keep workers alive between epochs (needs ``num_workers > 0``).
        prefetch: ``None``, ``'cpu'`` (background thread) or ``'cuda'`` (side-stream copies).
        drop_last: drop the last incomplete training batch.
        sampler: a custom training sampler (must yield valid dataset indices).
        enlarge_ratio: BasicSR's ``dataset_enlarge_ratio`` for the default training sampler.
        shuffle: shuffle the default training sampler.
        prefetch_depth: batches queued ahead by the CPU prefetcher.
        limit: ``'val'``/``'test'``: only the first ``limit`` items, shared out over the ranks (so the
            same images whatever the world size).

    Returns a ``DataLoader``, or a prefetcher wrapping one; all three iterate
    batches and expose ``len()``, ``.sampler`` and ``.dataset``.
    """
    if phase not in ("train", "val", "test"):
        raise ConfigError(f"build_dataloader: phase must be train, val or test, got {phase!r}")
    if prefetch not in PREFETCH_MODES:
        raise ConfigError(f"prefetch_mode: expected one of null, cpu, cuda, got {prefetch!r}")
    if prefetch == "cuda" and not torch.cuda.is_available():
        raise ConfigError("prefetch_mode: 'cuda' was requested but CUDA is not available on this machine; "
                          "use cpu or null")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    if len(dataset) == 0:
        raise ConfigError(f"build_dataloader: the {phase} dataset is empty")
    if phase == "train":
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if sampler is None:
            sampler = ResumableSampler(len(dataset), seed=seed, world_size=world_size, rank=rank,
                                       shuffle=shuffle, enlarge_ratio=enlarge_ratio)
        if drop_last and len(sampler) < batch_size:
            raise ConfigError(f"the training set gives {len(sampler)} samples per epoch on this rank, fewer "
                              f"than one batch of {batch_size} with drop_last; lower the batch size or raise "
                              f"dataset_enlarge_ratio")
    else:
        if sampler is None:
            end = len(dataset) if limit is None else min(len(dataset), limit)
            sampler = list(range(rank, end, world_size))
        batch_size, drop_last = 1, False
    if prefetch == "cuda":
        pin_memory = True
    kwargs = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        kwargs["worker_init_fn"] = partial(seed_worker, seed=seed, rank=rank)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        pin_memory=pin_memory, drop_last=drop_last, collate_fn=collate_samples, **kwargs)
    if prefetch == "cpu":
        return CPUPrefetcher(loader, depth=prefetch_depth)
    if prefetch == "cuda":
        return CUDAPrefetcher(loader)
    return loader
