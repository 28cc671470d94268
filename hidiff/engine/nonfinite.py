"""Skip optimiser steps whose loss or gradients are NaN/Inf, and stop a run that keeps doing so."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from hidiff.errors import HidiffError


class NonFiniteLossError(HidiffError, RuntimeError):
    """Too many consecutive iterations had a non-finite loss or gradient."""


class NonFiniteGuard:
    """Counts skipped steps; raises after ``max_consecutive`` in a row (0 = never)."""

    def __init__(self, max_consecutive: int = 20) -> None:
        self.max_consecutive = int(max_consecutive)
        self.total = 0
        self.consecutive = 0

    def record(self, finite: bool, iteration: int, detail: str = "") -> bool:
        """Record one step; returns True when it must be skipped."""
        if finite:
            self.consecutive = 0
            return False
        self.total += 1
        self.consecutive += 1
        if self.max_consecutive and self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"iteration {iteration}: {self.consecutive} consecutive steps had a non-finite loss or gradient "
                f"({detail}); stopping. Lower the learning rate, check the data for NaN/Inf, or with "
                "train.amp dtype fp16 try bf16 (train.max_consecutive_nonfinite sets this limit)")
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = int(state.get("total", 0))
        self.consecutive = int(state.get("consecutive", 0))


def first_nonfinite(terms: Mapping[str, Tensor], nets: Mapping[str, nn.Module]) -> str:
    """What went non-finite first: a loss term (the named ones before 'total'), else a gradient.

    Gradients are searched network by network in parameter order, so the answer
    names the parameter nearest the input of the first network that overflowed.
    """
    for k in sorted(terms, key=lambda k: k == "total"):
        if not torch.isfinite(terms[k]).all():
            return f"loss term {k} = {float(terms[k])}"
    for n, net in nets.items():
        for name, p in net.named_parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                return f"gradient of net_{n}.{name}"
    return "the gradient norm"
