"""Datasets, blur synthesis, samplers/loaders and benchmark preparation.

Every ``*_dataset.py`` module in this package is imported once so that its
``@DATASET_REGISTRY.register()`` decorators run.
"""
from __future__ import annotations

import importlib
import pkgutil

from hidiff.registry import DATASET_REGISTRY

for _m in pkgutil.iter_modules(__path__):
    if _m.name.endswith("_dataset"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["DATASET_REGISTRY"]
