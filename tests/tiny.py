"""Tiny real networks for fast tests (same classes as the paper-size ones)."""
from __future__ import annotations

from hidiff.archs import build_network
from hidiff.diffusion import build_diffusion

NET_G = {"type": "Transformer", "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
         "heads": [1, 1, 2, 2], "embed_dim": 16}
NET_LE = {"type": "latent_encoder_gelu", "in_chans": 6, "embed_dim": 16, "block_num": 1, "stage": 1}
NET_LE_DM = {"type": "latent_encoder_gelu", "in_chans": 3, "embed_dim": 16, "block_num": 1, "stage": 2}
NET_D = {"type": "denoising", "in_channel": 64, "out_channel": 64, "inner_channel": 32, "block_num": 3, "group": 4}


def tiny_networks():
    return {k: build_network(v) for k, v in {"g": NET_G, "le": NET_LE, "le_dm": NET_LE_DM, "d": NET_D}.items()}


def tiny_diffusion(preset: str = "hidiff_local", timesteps: int = 3):
    return build_diffusion(preset, timesteps=timesteps)
