"""HI-Diff stage 1: train the latent encoder and the U-Net with the ground-truth prior."""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from hidiff.archs import build_network
from hidiff.errors import ConfigError
from hidiff.inference.pipeline import OraclePipeline
from hidiff.models.base import StageModel, build_losses, sum_losses
from hidiff.registry import MODEL_REGISTRY


@MODEL_REGISTRY.register("HI_Diff_S1")
class HIDiffStage1(StageModel):
    """z = net_le(lq, gt) (GT-conditioned, 6 channels); out = net_g(lq, z); loss = L1(out, gt)."""

    save_names = ("g", "le")
    required_networks = ("g", "le")
    g_takes_prior = True

    def __init__(self, net_g, net_le, losses: Dict[str, torch.nn.Module], pad_multiple: int = 8) -> None:
        super().__init__({"g": net_g, "le": net_le}, pad_multiple=pad_multiple)
        self.pixel = losses["pixel_opt"]
        self.perceptual = losses.get("perceptual_opt")

    @classmethod
    def check_options(cls, options) -> None:
        super().check_options(options)
        if options.val.tile is not None:
            raise ConfigError("val.tile: stage 1 restores with the prior of the sharp image, whole (an oracle "
                              "number); it has no tiled path, so this block would be ignored; remove it")

    @classmethod
    def from_options(cls, options) -> "HIDiffStage1":
        nets = {k: build_network(options.networks[k], f"network_{k}") for k in ("g", "le")}
        losses = build_losses(options.train, ("pixel_opt", "perceptual_opt"))
        return cls(nets["g"], nets["le"], losses, pad_multiple=options.val.window_size)

    @property
    def has_prior(self) -> bool:
        return True

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        lq, gt = batch["lq"], batch["gt"]
        z = self.trainable["le"](lq, gt)
        out = self.trainable["g"](lq, z)
        terms = {"l_pix": self.pixel(out, gt)}
        if self.perceptual is not None:
            terms["l_percep"] = self.perceptual(out, gt)
        return sum_losses(terms)

    def pipeline(self) -> OraclePipeline:
        """Validation with the GT-conditioned prior: an oracle number (docs/quirks.md, quirk 23)."""
        return OraclePipeline(self.trainable["g"], self.trainable["le"], pad_multiple=self.pad_multiple)
