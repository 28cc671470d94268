"""Mixed precision for the training step: autocast, GradScaler, fallback policy.

Policy (documented choice): AMP is a CUDA feature here.  When ``train.amp.enabled``
is set but the run is on the CPU, training continues in fp32 and a warning says
so, so that a GPU option file can still be smoke-tested on a laptop.  An unknown
dtype is a ConfigError.  ``GradScaler`` is used only for fp16 (bf16 has fp32's
exponent range and needs no loss scaling); gradients are unscaled before
clipping so the clip norm refers to true gradients.  Schedule arithmetic and
softmax/normalisation statistics are kept in fp32 inside the networks and the
diffusion code, not here.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, ContextManager

import torch

from hidiff.errors import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


class Amp:
    """Autocast context and (for fp16) a gradient scaler for one device."""

    def __init__(self, enabled: bool, dtype: str, device: torch.device,
                 logger: logging.Logger | None = None) -> None:
        key = str(dtype).lower()
        if key not in _DTYPES:
            raise ConfigError(f"train.amp.dtype: expected one of bf16, fp16, got {dtype!r}")
        self.requested = bool(enabled)
        self.device = torch.device(device)
        self.enabled = self.requested and self.device.type == "cuda"
        if self.requested and not self.enabled:
            (logger or logging.getLogger("hidiff")).warning(
                "train.amp.enabled is true but the run is on %s: mixed precision is a CUDA feature here, "
                "training continues in fp32", self.device)
        if self.enabled and _DTYPES[key] is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"train.amp.dtype: bf16 is not supported by {torch.cuda.get_device_name(self.device)}; "
                              "use fp16")
        self.dtype = _DTYPES[key]
        self.use_scaler = self.enabled and self.dtype is torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_scaler)

    @property
    def name(self) -> str:
        if not self.enabled:
            return "fp32"
        return "bf16" if self.dtype is torch.bfloat16 else "fp16+GradScaler"

    def autocast(self) -> ContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients back to true scale (call once per step, before clipping)."""
        if self.use_scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, skip: bool) -> None:
        """Optimiser step unless ``skip``; always updates the loss scale."""
        if self.use_scaler:
            if not skip:
                self.scaler.step(optimizer)
            self.scaler.update()
        elif not skip:
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.use_scaler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.use_scaler and state:
            self.scaler.load_state_dict(state)
