"""Deterministic replacement of unreadable training items (``skip_corrupt: true``).

One bad file in a 100k-image training set should not kill a multi-day run;
with ``skip_corrupt`` the item is replaced by the next readable one (index + 1,
+ 2, ... modulo the dataset), which is the same in every run, and counted.
Validation and test items are never replaced: a benchmark must not silently
change.
"""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

from hidiff.errors import DataError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SkipCounter:
    """Counts replaced items (per process: each DataLoader worker holds its own copy)."""

    def __init__(self) -> None:
        self.count = 0


def read_or_replace(read: Callable[[int], T], i: int, n: int, *, enabled: bool, counter: SkipCounter,
                    dataset: str, phase: str) -> T:
    """``read(i)``, or with ``enabled`` the first readable of ``i+1, i+2, ...`` (mod ``n``)."""
    for step in range(n if enabled else 1):
        j = (i + step) % n
        try:
            return read(j)
        except DataError as exc:
            if not enabled:
                raise
            counter.count += 1
            logger.warning("dataset '%s' (phase %s): replacing unreadable item %d (%s); "
                           "%d replaced so far in this process", dataset, phase, j, exc, counter.count)
    raise DataError(f"dataset '{dataset}' (phase {phase}): every one of the {n} item(s) is unreadable")
