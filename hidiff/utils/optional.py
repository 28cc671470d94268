"""Imports of the optional parts of hidiff, failing with the extra that installs them."""
from __future__ import annotations

import importlib
from types import ModuleType

from hidiff.errors import HidiffError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``; if it is missing, raise HidiffError naming ``pip install 'hidiff[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise HidiffError(f"{purpose} needs the optional package '{module.split('.')[0]}' ({exc}); "
                          f"install it with: pip install 'hidiff[{extra}]'") from None
