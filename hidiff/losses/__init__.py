"""Loss functions and their registry (``pixel_opt``, ``pixel_diff_opt``, ``perceptual_opt``)."""
from __future__ import annotations

from typing import Any

from hidiff.errors import ConfigError
from hidiff.losses.perceptual_loss import PerceptualLoss
from hidiff.losses.pixel_loss import CharbonnierLoss, L1Loss, MSELoss
from hidiff.registry import LOSS_REGISTRY
from hidiff.utils.kwargs import build_from_registry, check_kwargs


def check_loss_block(block: Any, where: str) -> None:
    """Validate a loss block's type and keywords at config-load time."""
    try:
        cls = LOSS_REGISTRY.get(block.type)
    except Exception as exc:
        raise ConfigError(f"{where}.type: {exc}") from None
    check_kwargs(cls, block.kwargs, where)


def build_loss(block: Any, where: str = "loss"):
    """Instantiate a loss from a Block or a ``{type: ..., **kwargs}`` dict."""
    if hasattr(block, "to_block"):
        block = block.to_block()
    return build_from_registry(LOSS_REGISTRY, block, where)


__all__ = ["L1Loss", "MSELoss", "CharbonnierLoss", "PerceptualLoss", "build_loss", "check_loss_block"]
