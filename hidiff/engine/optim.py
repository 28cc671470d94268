"""Build the one optimiser of a stage from ``train.optim_total``."""
from __future__ import annotations

from typing import Iterable

import torch

from hidiff.errors import ConfigError
from hidiff.utils.kwargs import check_kwargs


def build_optimizer(params: Iterable[torch.nn.Parameter], block) -> torch.optim.Optimizer:
    """``{type: AdamW, lr: 2e-4, ...}`` -> ``torch.optim.AdamW(params, ...)``.

    One parameter group over every trainable parameter, as the official code
    (weight decay also applies to norms and biases there).
    """
    if block is None:
        raise ConfigError("train.optim_total: no optimiser configured (e.g. {type: AdamW, lr: 2e-4, "
                          "weight_decay: 1e-4, betas: [0.9, 0.999]})")
    blk = block.to_block() if hasattr(block, "to_block") else dict(block)
    name = blk.pop("type")
    cls = getattr(torch.optim, name, None)
    if not isinstance(cls, type) or not issubclass(cls, torch.optim.Optimizer):
        raise ConfigError(f"train.optim_total.type: '{name}' is not a torch.optim optimiser")
    check_kwargs(cls, {"params": None, **blk}, "train.optim_total")
    if "betas" in blk:
        blk["betas"] = tuple(blk["betas"])
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ConfigError("train: the model has no trainable parameters")
    return cls(params, **blk)
