"""Pure ``nn.Module`` networks (no I/O, no config objects) and their registry.

Every ``*_arch.py`` module in this package is imported once so that its
``@ARCH_REGISTRY.register()`` decorators run; ``build_network`` turns a YAML
``network_*`` block into a module.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping

from hidiff.registry import ARCH_REGISTRY
from hidiff.utils.kwargs import build_from_registry

for _m in pkgutil.iter_modules(__path__):
    if _m.name.endswith("_arch"):
        importlib.import_module(f"{__name__}.{_m.name}")


def build_network(opt: Mapping[str, Any], where: str = "network"):
    """Build the network described by a ``{type: Name, **kwargs}`` block."""
    if hasattr(opt, "to_block"):
        opt = opt.to_block()
    return build_from_registry(ARCH_REGISTRY, opt, where)


__all__ = ["ARCH_REGISTRY", "build_network"]
