"""Per-sample random generators that do not depend on worker count or process.

A training index is either an ``int`` or an ``(index, token)`` tuple from
:class:`~hidiff.data.sampler.ResumableSampler` (token = epoch).  Every random
choice of a sample is drawn from ``numpy.random.default_rng([seed, token,
index])``, so a sample is bitwise reproducible no matter which worker loads it,
and an exact resume only has to restore the sampler position.
"""
from __future__ import annotations

import hashlib
from typing import Union

import numpy as np

from hidiff.errors import DataError

SampleIndex = Union[int, tuple, list]


def split_index(index: SampleIndex) -> tuple[int, int]:
    """``index`` or ``(index, token)`` -> ``(index, token)``; a plain int has token 0."""
    if isinstance(index, (tuple, list)):
        if len(index) != 2:
            raise DataError(f"a sample index must be an int or an (index, token) pair, got {index!r}")
        idx, token = index
    else:
        idx, token = index, 0
    idx, token = int(idx), int(token)
    if idx < 0 or token < 0:
        raise DataError(f"sample index and token must be non-negative, got ({idx}, {token})")
    return idx, token


def sample_rng(seed: int, index: int, token: int = 0) -> np.random.Generator:
    """The generator of sample ``index`` in epoch ``token``: ``default_rng([seed, token, index])``."""
    return np.random.default_rng([int(seed), int(token), int(index)])


def key_seed(key: str) -> int:
    """A stable 63-bit integer from a file stem (sha256), for per-image seeds of frozen sets."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little") >> 1


def key_rng(seed: int, key: str) -> np.random.Generator:
    """Generator of a fixed (val/test) sample: ``default_rng([seed, key_seed(key)])``.

    Keyed by the file stem rather than the position, so adding or removing
    photos does not change the other images of a frozen set.
    """
    return np.random.default_rng([int(seed), key_seed(key)])
