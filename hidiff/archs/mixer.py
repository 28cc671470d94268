"""MLP-Mixer block (Tolstikhin et al. 2021) on a short token sequence.

Used by the latent encoders (16 prior tokens) and by the ``denoising`` network.
Key names (``patch_mixer``, ``channel_mixer``, ``norm1``, ``norm2``) follow the
official checkpoints; the norms are created after the mixers, as there.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from hidiff.archs.sample_wise import SampleWiseLinear
from hidiff.errors import ConfigError


class MixerBlock(nn.Module):
    """x + TokenMLP(LN(x)) over the token axis, then x + ChannelMLP(LN(x)) over channels.

    Token MLP: num_tokens -> int(num_tokens * patch_expansion) -> num_tokens;
    channel MLP: dim -> int(dim * channel_expansion) -> dim; both with GELU.
    Input and output (B, num_tokens, dim).
    """

    def __init__(self, num_tokens: int, dim: int, patch_expansion: float = 0.5,
                 channel_expansion: float = 4.0) -> None:
        super().__init__()
        token_hidden = int(num_tokens * patch_expansion)
        channel_hidden = int(dim * channel_expansion)
        if token_hidden < 1 or channel_hidden < 1:
            raise ConfigError(f"MixerBlock: patch_expansion={patch_expansion} / channel_expansion="
                              f"{channel_expansion} leave no hidden units for {num_tokens} tokens x {dim} channels")
        self.num_tokens = num_tokens
        self.patch_mixer = nn.Sequential(SampleWiseLinear(num_tokens, token_hidden), nn.GELU(),
                                         SampleWiseLinear(token_hidden, num_tokens))
        self.channel_mixer = nn.Sequential(SampleWiseLinear(dim, channel_hidden), nn.GELU(),
                                           SampleWiseLinear(channel_hidden, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.num_tokens:
            raise ValueError(f"MixerBlock expects {self.num_tokens} tokens, got input of shape {tuple(x.shape)}")
        x = x + self.patch_mixer(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mixer(self.norm2(x))
