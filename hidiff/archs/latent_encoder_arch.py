"""Latent encoders of HI-Diff: an image -> a compact prior z of shape (B, group**2, 4*embed_dim).

Registered under the official names ``latent_encoder_gelu`` (GoPro) and
``latent_encoder_lrelu`` (RealBlur).  Stage 1 (``net_le``, in_chans=6) encodes
concat([gt, blurry]); stage 2 (``net_le_dm``, in_chans=3) encodes the blurry image
alone and provides the diffusion condition.  The prior width 4*embed_dim must match
the U-Net's ``embed_dim`` and the denoiser's width.

Pipeline: PixelUnshuffle(4) -> conv1 (+act) -> ``block_num`` residual conv blocks
-> conv2 -> AdaptiveAvgPool to group x group -> row-major tokens -> one MLP-Mixer
block -> ``end`` Linear to 4*embed_dim (+act).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from hidiff.archs.adaptive_pool import ExportableAdaptiveAvgPool2d
from hidiff.archs.mixer import MixerBlock
from hidiff.archs.sample_wise import SampleWiseLinear
from hidiff.errors import ConfigError
from hidiff.registry import ARCH_REGISTRY


class _ResidualConvBlock(nn.Sequential):
    """x + conv3x3(act(conv3x3(x))); keys ``0.*`` and ``2.*``."""

    def __init__(self, width: int, act: nn.Module) -> None:
        super().__init__(nn.Conv2d(width, width, 3, 1, 1), act, nn.Conv2d(width, width, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def _act(kind: str) -> nn.Module:
    return nn.GELU() if kind == "gelu" else nn.LeakyReLU(0.1, inplace=False)


class LatentEncoder(nn.Module):
    """Shared skeleton of both official encoders; ``act`` selects the variant.

    ``act='gelu'``: conv2 is one 3x3 conv (E->E); the Mixer runs at E channels and
    ``end`` is Linear(E, 4E)+GELU, so z >= -0.17 (the GELU minimum).
    ``act='lrelu'``: LeakyReLU(0.1) everywhere; conv2 is E->2E->2E->4E with
    LeakyReLU after each conv; the Mixer runs at 4E and ``end`` is Linear(4E, 4E)+LReLU.
    The Mixer itself uses GELU in both variants.
    """

    act_kind = "gelu"

    def __init__(self, in_chans: int = 6, embed_dim: int = 64, block_num: int = 6, stage: int = 1,
                 group: int = 4, patch_expansion: float = 0.5, channel_expansion: float = 4) -> None:
        super().__init__()
        for key, value in (("in_chans", in_chans), ("embed_dim", embed_dim), ("group", group)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{type(self).__name__}.{key}: expected a positive integer, got {value!r}")
        if not isinstance(block_num, int) or isinstance(block_num, bool) or block_num < 0:
            raise ConfigError(f"{type(self).__name__}.block_num: expected an integer >= 0, got {block_num!r}")
        if stage not in (1, 2):
            raise ConfigError(f"{type(self).__name__}.stage: expected 1 (gt + blurry) or 2 (blurry only), "
                              f"got {stage!r}")
        if in_chans != 6 // stage:
            raise ConfigError(f"{type(self).__name__}.in_chans: stage {stage} needs in_chans={6 // stage} "
                              f"({'concat of gt and blurry' if stage == 1 else 'blurry image only'}), "
                              f"got {in_chans}")
        e = embed_dim
        self.in_chans = in_chans
        self.stage = stage
        self.group = group
        act = self.act_kind
        self.conv1 = nn.Sequential(nn.Conv2d(in_chans * 16, e, 3, 1, 1), _act(act))
        self.blocks = nn.Sequential(*[_ResidualConvBlock(e, _act(act)) for _ in range(block_num)])
        if act == "gelu":
            self.conv2 = nn.Conv2d(e, e, 3, 1, 1)
            width = e
        else:
            self.conv2 = nn.Sequential(nn.Conv2d(e, 2 * e, 3, 1, 1), _act(act), nn.Conv2d(2 * e, 2 * e, 3, 1, 1),
                                       _act(act), nn.Conv2d(2 * e, 4 * e, 3, 1, 1), _act(act))
            width = 4 * e
        self.pool = ExportableAdaptiveAvgPool2d((group, group))
        self.mlp = MixerBlock(group * group, width, patch_expansion, channel_expansion)
        self.end = nn.Sequential(SampleWiseLinear(width, 4 * e), _act(act))

    def forward(self, inp_img: torch.Tensor, gt: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encode the blurry image (stage 2) or concat([gt, blurry]) (stage 1) into (B, group**2, 4E)."""
        x = inp_img if gt is None else torch.cat([gt, inp_img], dim=1)
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            hint = "pass gt=... (stage 1 encodes gt and blurry)" if self.stage == 1 else "pass the blurry image only"
            raise ValueError(f"{type(self).__name__} (stage {self.stage}) expects {self.in_chans} input channels, "
                             f"got shape {tuple(x.shape)}; {hint}")
        if x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ValueError(f"{type(self).__name__}: H and W must be multiples of 4, got {tuple(x.shape[-2:])}")
        x = self.conv1(F.pixel_unshuffle(x, 4))
        x = self.conv2(self.blocks(x))
        x = self.pool(x).flatten(2).transpose(1, 2)  # (B, group**2, C), tokens in row-major order
        return self.end(self.mlp(x))


@ARCH_REGISTRY.register("latent_encoder_gelu")
class LatentEncoderGELU(LatentEncoder):
    """GoPro latent encoder (official ``latent_encoder_gelu``)."""

    act_kind = "gelu"


@ARCH_REGISTRY.register("latent_encoder_lrelu")
class LatentEncoderLReLU(LatentEncoder):
    """RealBlur latent encoder (official ``latent_encoder_lrelu``); default block_num 5 as shipped."""

    act_kind = "lrelu"

    def __init__(self, in_chans: int = 6, embed_dim: int = 64, block_num: int = 5, stage: int = 1,
                 group: int = 4, patch_expansion: float = 0.5, channel_expansion: float = 4) -> None:
        super().__init__(in_chans, embed_dim, block_num, stage, group, patch_expansion, channel_expansion)
