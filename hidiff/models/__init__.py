"""Stage models: *what* one training stage optimises (nets, frozen nets, losses).

The generic trainer (``hidiff.engine``) owns *how*: devices, AMP, DDP, EMA,
checkpoints.  Every ``*_model.py`` module here registers its class in
MODEL_REGISTRY under the official ``model_type`` name.
"""
from __future__ import annotations

import importlib
import pkgutil

from hidiff.models.base import StageModel
from hidiff.registry import MODEL_REGISTRY

for _m in pkgutil.iter_modules(__path__):
    if _m.name.endswith("_model"):
        importlib.import_module(f"{__name__}.{_m.name}")


def build_model(options) -> StageModel:
    """Build the stage model named by ``options.model_type`` with freshly initialised networks."""
    cls = MODEL_REGISTRY.get(options.model_type)
    return cls.from_options(options)


__all__ = ["StageModel", "build_model", "MODEL_REGISTRY"]
