"""The 4-level Restormer U-Net skeleton shared by HI-Diff's Transformer and Swintormer.

Modules are created in the official order, so both networks keep their
published state_dict key order; each network supplies its own ``stage(name)``
factory (HI-Diff ``BasicLayer``s, Swintormer SWDA stages) and its own stem and head.
Also here: Restormer's patch embedding and its down/upsamplers.
"""
from __future__ import annotations

from typing import Callable, FrozenSet, Sequence, Union

import torch
from torch import nn

from hidiff.errors import ConfigError
from hidiff.utils.suggest import did_you_mean

STAGES = ("encoder_level1", "encoder_level2", "encoder_level3", "latent",
          "decoder_level3", "decoder_level2", "decoder_level1", "refinement")
#: the stages of each U-Net level: 1-3 an encoder and its decoder, 4 the latent
LEVEL_STAGES = {1: ("encoder_level1", "decoder_level1"), 2: ("encoder_level2", "decoder_level2"),
                3: ("encoder_level3", "decoder_level3"), 4: ("latent",)}


def checkpoint_stages(levels: Sequence[Union[str, int]], key: str = "checkpoint_levels") -> FrozenSet[str]:
    """The stage names meant by ``levels``: U-Net levels 1-4 (see ``LEVEL_STAGES``) and/or stage names."""
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence):
        raise ConfigError(f"{key}: expected a list of U-Net levels (1-4) or stage names, got {levels!r}")
    names = set()
    for level in levels:
        if isinstance(level, int) and not isinstance(level, bool) and level in LEVEL_STAGES:
            names.update(LEVEL_STAGES[level])
        elif isinstance(level, str) and level in STAGES:
            names.add(level)
        else:
            hint = did_you_mean(str(level), STAGES) if isinstance(level, str) else ""
            raise ConfigError(f"{key}: unknown level {level!r}{hint}; expected 1-4 or one of {', '.join(STAGES)}")
    return frozenset(names)


def add_unet_levels(net: nn.Module, stage: Callable[[str], nn.Module], dim: int, bias: bool) -> None:
    """Attach encoder levels, down/upsamplers, channel reducers, decoder levels and refinement to ``net``."""
    net.encoder_level1 = stage("encoder_level1")
    net.down1_2 = Downsample(dim)
    net.encoder_level2 = stage("encoder_level2")
    net.down2_3 = Downsample(dim * 2)
    net.encoder_level3 = stage("encoder_level3")
    net.down3_4 = Downsample(dim * 4)
    net.latent = stage("latent")
    net.up4_3 = Upsample(dim * 8)
    net.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
    net.decoder_level3 = stage("decoder_level3")
    net.up3_2 = Upsample(dim * 4)
    net.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
    net.decoder_level2 = stage("decoder_level2")
    net.up2_1 = Upsample(dim * 2)
    net.decoder_level1 = stage("decoder_level1")
    net.refinement = stage("refinement")


class OverlapPatchEmbed(nn.Module):
    """3x3 conv from image channels to the first feature width."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, stride=1, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """3x3 conv n -> n/2 then PixelUnshuffle(2): 2n channels at half resolution."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        if n_feat % 2:
            raise ConfigError(f"Downsample: channel count {n_feat} must be even")
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, stride=1, padding=1, bias=False),
                                  nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """3x3 conv n -> 2n then PixelShuffle(2): n/2 channels at double resolution."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, stride=1, padding=1, bias=False),
                                  nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
