"""The 4-level Restormer U-Net skeleton shared by HI-Diff's Transformer and Swintormer.

Modules are created in the official order, so both networks keep their
published state_dict key order; each network supplies its own ``stage(name)``
factory (HI-Diff ``BasicLayer``s, Swintormer SWDA stages) and its own stem and head.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from hidiff.archs.restormer_blocks import Downsample, Upsample

STAGES = ("encoder_level1", "encoder_level2", "encoder_level3", "latent",
          "decoder_level3", "decoder_level2", "decoder_level1", "refinement")


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
