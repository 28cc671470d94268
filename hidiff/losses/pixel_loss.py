"""Pixel-wise losses (BasicSR names and arguments: loss_weight, reduction)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hidiff.errors import ConfigError
from hidiff.registry import LOSS_REGISTRY

_REDUCTIONS = ("none", "mean", "sum")


class _WeightedLoss(nn.Module):
    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ConfigError(f"loss reduction must be one of {_REDUCTIONS}, got '{reduction}'")
        self.loss_weight = float(loss_weight)
        self.reduction = reduction


@LOSS_REGISTRY.register()
class L1Loss(_WeightedLoss):
    """Mean absolute error, the only loss the official HI-Diff uses (image and prior)."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.loss_weight * F.l1_loss(pred.float(), target.float(), reduction=self.reduction)


@LOSS_REGISTRY.register()
class MSELoss(_WeightedLoss):
    """Mean squared error."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.loss_weight * F.mse_loss(pred.float(), target.float(), reduction=self.reduction)


@LOSS_REGISTRY.register()
class CharbonnierLoss(_WeightedLoss):
    """sqrt((x - y)^2 + eps): a smooth L1.

    ``eps`` is added as given, not squared (BasicSR's convention, which the official code follows): the
    default 1e-12 is a floor of 1e-6 on each absolute difference.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", eps: float = 1e-12) -> None:
        super().__init__(loss_weight, reduction)
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        diff = torch.sqrt((pred.float() - target.float()) ** 2 + self.eps)
        if self.reduction == "mean":
            diff = diff.mean()
        elif self.reduction == "sum":
            diff = diff.sum()
        return self.loss_weight * diff
