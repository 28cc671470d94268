"""Exponential moving average of a network's parameters *and* buffers.

BasicSR averages parameters only; here floating-point buffers are averaged
too and integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are copied,
so an EMA network with normalisation statistics is self-consistent.
The average is kept in fp32 whatever dtype the live network uses.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * live`` after every optimiser step."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow: dict[str, Tensor] = {
            k: (v.detach().clone().float() if v.is_floating_point() else v.detach().clone())
            for k, v in net.state_dict().items()
        }

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        for k, v in net.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(self.decay).add_(v.detach().float(), alpha=1.0 - self.decay)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights, on the CPU, with the live network's keys."""
        return {k: v.detach().cpu().clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        unexpected = set(state) - set(self.shadow)
        if missing or unexpected:
            raise KeyError(f"EMA state does not fit the network: missing {sorted(missing)}, "
                           f"unexpected {sorted(unexpected)}")
        for k, v in state.items():
            self.shadow[k].copy_(v)

    def to(self, device: torch.device | str) -> "ModelEMA":
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    @contextlib.contextmanager
    def applied_to(self, net: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into ``net`` (e.g. for validation)."""
        backup = {k: v.detach().clone() for k, v in net.state_dict().items()}
        with torch.no_grad():
            for k, v in net.state_dict().items():
                v.copy_(self.shadow[k])
        try:
            yield net
        finally:
            with torch.no_grad():
                for k, v in net.state_dict().items():
                    v.copy_(backup[k])
