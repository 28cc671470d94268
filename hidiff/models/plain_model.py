"""A prior-free restoration network trained with a pixel loss.

Used for the paper's baseline (the HI-Diff U-Net with ``use_prior: false``) and
for the published Swintormer (``prior: none``).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from hidiff.archs import build_network
from hidiff.inference.pipeline import RestorationPipeline
from hidiff.models.base import StageModel, build_losses, sum_losses
from hidiff.registry import MODEL_REGISTRY


@MODEL_REGISTRY.register("PlainRestoration")
class PlainRestoration(StageModel):
    """out = net_g(lq); loss = pixel (+ perceptual)."""

    save_names = ("g",)
    required_networks = ("g",)
    g_takes_prior = False

    def __init__(self, net_g, losses: Optional[Dict[str, torch.nn.Module]] = None, pad_multiple: int = 8,
                 in_channels: int = 3) -> None:
        super().__init__({"g": net_g}, pad_multiple=pad_multiple)
        losses = losses or {}
        self.pixel = losses.get("pixel_opt")
        self.perceptual = losses.get("perceptual_opt")
        self.in_channels = in_channels

    @classmethod
    def from_options(cls, options) -> "PlainRestoration":
        net_g = build_network(options.networks["g"], "network_g")
        losses = build_losses(options.train, ("pixel_opt", "perceptual_opt")) if options.is_train else {}
        # the built network's own count: its default may not be 3 (Swintormer's is 6, two dual-pixel views)
        in_ch = int(getattr(net_g, "inp_channels", 3))
        return cls(net_g, losses, pad_multiple=options.val.window_size, in_channels=in_ch)

    def pipeline(self) -> RestorationPipeline:
        return RestorationPipeline(self.trainable["g"], pad_multiple=self.pad_multiple,
                                   in_channels=self.in_channels)

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        out = self.trainable["g"](batch["lq"])
        terms = {"l_pix": self.pixel(out, batch["gt"])}
        if self.perceptual is not None:
            terms["l_percep"] = self.perceptual(out, batch["gt"])
        return sum_losses(terms)
