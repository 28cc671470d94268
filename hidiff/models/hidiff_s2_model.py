"""HI-Diff stage 2: diffusion prior + U-Net trained end to end, net_le frozen."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from hidiff.archs import build_network
from hidiff.diffusion.latent_ddpm import LatentDDPM
from hidiff.errors import ConfigError
from hidiff.inference.pipeline import RestorationPipeline
from hidiff.models.base import StageModel, build_losses, sum_losses
from hidiff.registry import MODEL_REGISTRY


@MODEL_REGISTRY.register("HI_Diff_S2")
class HIDiffStage2(StageModel):
    """Per iteration (docs/architecture.md 3.2):

    z = net_le(lq, gt) (frozen target prior); c = net_le_dm(lq);
    x_T = q_sample(z, eps); z_hat = the full unrolled T-step chain from x_T;
    out = net_g(lq, z_hat) with z_hat not detached (docs/quirks.md, quirk 14);
    loss = L1(out, gt) + L1(z_hat, z).
    """

    save_names = ("g", "le_dm", "d")
    required_networks = ("g", "le_dm", "d")
    g_takes_prior = True
    uses_diffusion = True
    loss_blocks = ("pixel_opt", "pixel_diff_opt", "perceptual_opt")

    def __init__(self, net_g, net_le_dm, net_d, diffusion: LatentDDPM, net_le=None,
                 losses: Optional[Dict[str, torch.nn.Module]] = None, pad_multiple: int = 8) -> None:
        super().__init__({"g": net_g, "le_dm": net_le_dm, "d": net_d},
                         frozen={"le": net_le} if net_le is not None else None, pad_multiple=pad_multiple)
        self.diffusion = diffusion
        losses = losses or {}
        self.pixel = losses.get("pixel_opt")
        self.pixel_diff = losses.get("pixel_diff_opt")
        self.perceptual = losses.get("perceptual_opt")

    @classmethod
    def check_options(cls, options) -> None:
        super().check_options(options)
        if options.diffusion_schedule is None:
            raise ConfigError("model_type HI_Diff_S2 needs a 'diffusion_schedule' block")
        if options.is_train and "le" not in options.networks:
            raise ConfigError("model_type HI_Diff_S2: training needs network_le (the frozen stage-1 encoder "
                              "that gives the target prior)")

    @classmethod
    def from_options(cls, options) -> "HIDiffStage2":
        nets = {k: build_network(options.networks[k], f"network_{k}") for k in ("g", "le_dm", "d")}
        net_le = build_network(options.networks["le"], "network_le") if (
            options.is_train and "le" in options.networks) else None
        losses = build_losses(options.train, ("pixel_opt", "pixel_diff_opt", "perceptual_opt")) \
            if options.is_train else {}
        return cls(nets["g"], nets["le_dm"], nets["d"], options.diffusion_schedule.build(), net_le=net_le,
                   losses=losses, pad_multiple=options.val.window_size)

    @property
    def has_prior(self) -> bool:
        return True

    def pipeline(self) -> RestorationPipeline:
        """The inference path with this model's (current) networks."""
        return RestorationPipeline(self.trainable["g"], net_le_dm=self.trainable["le_dm"],
                                   net_d=self.trainable["d"], diffusion=self.diffusion,
                                   pad_multiple=self.pad_multiple)

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        if "le" not in self.frozen:
            raise RuntimeError("stage-2 training needs the frozen stage-1 encoder net_le")
        lq, gt = batch["lq"], batch["gt"]
        with torch.no_grad():
            z = self.frozen["le"](lq, gt)
        cond = self.trainable["le_dm"](lq)
        x_t = self.diffusion.q_sample(z, torch.randn_like(cond, dtype=torch.float32))
        z_hat = self.diffusion.sample(self.trainable["d"], cond, x_t)
        out = self.trainable["g"](lq, z_hat)
        terms = {"l_pix": self.pixel(out, gt), "l_diff": self.pixel_diff(z_hat, z.float())}
        if self.perceptual is not None:
            terms["l_percep"] = self.perceptual(out, gt)
        return sum_losses(terms)
