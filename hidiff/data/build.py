"""Instantiate a validated dataset block (``DatasetOptions``) from the registry."""
from __future__ import annotations

import inspect

from hidiff.registry import DATASET_REGISTRY


def build_dataset(ds_opts, default_seed: int):
    """The dataset of one ``datasets.<phase>`` block.

    The phase comes from the block's key; ``seed`` defaults to ``manual_seed``
    and ``name`` to the block's name when the dataset takes them.
    """
    cls = DATASET_REGISTRY.get(ds_opts.type)
    accepted = inspect.signature(cls).parameters
    params = dict(ds_opts.params)
    if "seed" in accepted:
        params.setdefault("seed", default_seed)
    if "name" in accepted:
        params.setdefault("name", ds_opts.name)
    return cls(phase=ds_opts.phase, **params)
