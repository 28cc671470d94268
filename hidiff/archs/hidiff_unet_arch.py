"""HI-Diff's U-shaped Transformer ``net_g`` (registered as ``Transformer`` and ``HIDiffUNet``).

A Restormer U-Net of eight stages (``BasicLayer``s) into which a compact prior
z1 (B, group**2, 4*embed_dim) is injected:

=================  ====  =====  =================================
stage              res   width  prior (official)
=================  ====  =====  =================================
encoder_level1     H     dim    z1 (16 tokens) through a HIM
encoder_level2     H/2   2dim   z2 (4 tokens) through a HIM
encoder_level3     H/4   4dim   z2 through a HIM
latent             H/8   8dim   z3 (vector) as FiLM in every block
decoder_level3     H/4   4dim   z2 through a HIM
decoder_level2     H/2   2dim   z2 through a HIM
decoder_level1     H     2dim   z1 through a HIM
refinement         H     2dim   z1 through a HIM
=================  ====  =====  =================================

Prior width: the prior has ``4 * embed_dim`` channels (256 for embed_dim=64).  It
must match the latent encoder (``embed_dim`` there) and the denoiser
(``denoising.in_channel = 4*embed_dim``; ``simple_denoise.n_feats = embed_dim``),
so a tiny demo config changes ``embed_dim`` consistently in all of them, e.g.
``Transformer(dim=8, num_blocks=[1,1,1,1], num_refinement_blocks=1,
heads=[1,1,1,1], embed_dim=16)`` takes a (B,16,64) prior.

H and W must be multiples of 8; padding belongs to the inference pipeline.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from hidiff.archs.attention_registry import attention_types
from hidiff.archs.basic_layer import BasicLayer
from hidiff.archs.fast.basic_layer import FastBasicLayer
from hidiff.archs.prior_pyramid import prior_pyramid, token_reducer
from hidiff.archs.unet_levels import STAGES, OverlapPatchEmbed, add_unet_levels, checkpoint_stages
from hidiff.errors import ConfigError
from hidiff.registry import ARCH_REGISTRY
from hidiff.utils.suggest import did_you_mean

DEFAULT_HIM_LEVELS = tuple(name for name in STAGES if name != "latent")
# Stripe size for inference (pixels); see Transformer(inference_chunk_pixels=...).
DEFAULT_CHUNK_PIXELS = 16384
# Which pyramid level feeds each stage (official: levels 2 and 3 both use z2).
PRIOR_SCALE = {"encoder_level1": "z1", "encoder_level2": "z2", "encoder_level3": "z2", "latent": "z3",
               "decoder_level3": "z2", "decoder_level2": "z2", "decoder_level1": "z1", "refinement": "z1"}


def _int_list(value, n: int, key: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != n:
        raise ConfigError(f"{key}: expected a list of {n} positive integers, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ConfigError(f"{key}: expected a list of {n} positive integers, got {value!r}")
    return list(value)


def _positive_int(value, key: str, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{key}: expected an integer >= {low}, got {value!r}")
    return value


def _him_levels(value) -> tuple:
    if value is None:
        return DEFAULT_HIM_LEVELS
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"him_levels: expected a list of stage names from {list(STAGES)}, got {value!r}")
    for name in value:
        if name not in STAGES:
            raise ConfigError(f"him_levels: unknown stage {name!r}{did_you_mean(str(name), STAGES)}; "
                              f"stages: {', '.join(STAGES)}")
    if len(set(value)) != len(value):
        raise ConfigError(f"him_levels: duplicate stage names in {list(value)}")
    return tuple(value)


def _attn_types(value) -> Dict[str, str]:
    """Normalise ``attn_types`` (one name, a list of 8, or a {stage: name} mapping) to a dict."""
    if isinstance(value, str):
        types = {name: value for name in STAGES}
    elif isinstance(value, Mapping):
        for name in value:
            if name not in STAGES:
                raise ConfigError(f"attn_types: unknown stage {name!r}{did_you_mean(str(name), STAGES)}; "
                                  f"stages: {', '.join(STAGES)}")
        types = {name: value.get(name, "mdta") for name in STAGES}
    elif isinstance(value, Sequence) and len(value) == len(STAGES):
        types = dict(zip(STAGES, value))
    else:
        raise ConfigError(f"attn_types: expected an attention name, a list of {len(STAGES)} names "
                          f"(one per stage: {', '.join(STAGES)}) or a {{stage: name}} mapping, got {value!r}")
    known = attention_types()
    for stage, name in types.items():
        if name not in known:
            raise ConfigError(f"attn_types[{stage}]: unknown attention type {name!r}"
                              f"{did_you_mean(str(name), known)}; known types: {', '.join(known)}")
    return types


@ARCH_REGISTRY.register("HIDiffUNet")
@ARCH_REGISTRY.register()
class Transformer(nn.Module):
    """HI-Diff U-Net (official class name ``Transformer``); see the module docstring.

    Official keyword arguments: ``inp_channels, out_channels, dim, num_blocks
    (4 ints: encoder levels 1-3 and latent), num_refinement_blocks, heads (4 ints),
    ffn_expansion_factor, bias, LayerNorm_type ('WithBias'|'BiasFree'),
    dual_pixel_task, embed_dim (prior width = 4*embed_dim), group (prior tokens =
    group**2)``.  Defaults are the shipped GoPro values.

    Ablation switches (defaults reproduce the official network and state_dict):
    - ``use_prior=False``: prior-free Restormer-style baseline (no HIM, FiLM or pyramid).
    - ``him_levels``: stages that get a HIM (default all but ``latent``; adding
      ``'latent'`` gives the paper-figure bottleneck HIM on z3 as one token).
    - ``film_bottleneck``: FiLM of the latent blocks by z3.
    - ``prior_pyramid=False``: single-scale prior: every HIM takes z1 and FiLM takes
      the token mean of z1; ``down_1``/``down_2`` are not built.
    - ``attn_types``: attention per stage (a name, a list of 8, or {stage: name});
      see ``attention_registry.register_attention``.  ``attn_options`` maps an attention
      name to extra constructor kwargs for it.
    - ``fused_attention``: build the CPU-fast formulations of MDTA, GDFN, HIM and the
      blocks (:mod:`hidiff.archs.fast`); False builds the textbook classes (same
      parameters and maths, up to float rounding).
    - ``channels_last``: run the feature maps in channels_last memory format (faster
      on CPU, copy-free LayerNorm); the output has the input's memory format.
    - ``inference_chunk_pixels``: without autograd and on the CPU, the fast MDTA and
      GDFN run over row stripes, and the fast HIM over pixel chunks, of at most this
      many pixels (default 16384; exact maths up to float summation order; bounds the
      peak memory of large images and keeps temporaries cache-sized).  None or 0 disables it.  On CUDA images are
      taken whole (stripes cost speed there; the tiler bounds memory).  See
      ``set_inference_chunk_pixels``.
    - ``zero_init_output``: start the output conv at zero, so the untrained network
      is the identity (the global residual passes the blurry input through).  The
      official default init adds a random image that the first ~150 iterations
      spend removing (demo: L1 0.063 at iteration 100, 0.031 at 200); short
      training runs learn deblurring sooner.  Only the initial values change.

    Training memory: ``set_checkpoint_levels`` recomputes chosen stages in backward.

    ``dual_pixel_task=True`` (inp_channels=6, no global residual, ``skip_conv``) is
    Restormer's dual-pixel variant; no HI-Diff config uses it.
    """

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (3, 5, 6, 6), num_refinement_blocks: int = 4,
                 heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = "WithBias", dual_pixel_task: bool = False, embed_dim: int = 64,
                 group: int = 4, *, use_prior: bool = True, him_levels: Optional[Sequence[str]] = None,
                 film_bottleneck: bool = True, prior_pyramid: bool = True,
                 attn_types: Union[str, Sequence[str], Mapping[str, str]] = "mdta",
                 attn_options: Optional[Mapping[str, Mapping]] = None, fused_attention: bool = True,
                 channels_last: bool = True, inference_chunk_pixels: Optional[int] = DEFAULT_CHUNK_PIXELS,
                 zero_init_output: bool = False) -> None:
        super().__init__()
        num_blocks = _int_list(num_blocks, 4, "num_blocks")
        heads = _int_list(heads, 4, "heads")
        _positive_int(inp_channels, "inp_channels")
        _positive_int(out_channels, "out_channels")
        _positive_int(dim, "dim")
        _positive_int(num_refinement_blocks, "num_refinement_blocks", allow_zero=True)
        _positive_int(embed_dim, "embed_dim")
        _positive_int(group, "group")
        if dim % 2:
            raise ConfigError(f"dim: must be even (Downsample halves it before PixelUnshuffle), got {dim}")
        if not isinstance(ffn_expansion_factor, (int, float)) or int(dim * ffn_expansion_factor) < 1:
            raise ConfigError(f"ffn_expansion_factor: expected a positive number, got {ffn_expansion_factor!r}")
        widths = {"encoder_level1": dim, "encoder_level2": dim * 2, "encoder_level3": dim * 4,
                  "latent": dim * 8, "decoder_level3": dim * 4, "decoder_level2": dim * 2,
                  "decoder_level1": dim * 2, "refinement": dim * 2}
        n_heads = {"encoder_level1": heads[0], "encoder_level2": heads[1], "encoder_level3": heads[2],
                   "latent": heads[3], "decoder_level3": heads[2], "decoder_level2": heads[1],
                   "decoder_level1": heads[0], "refinement": heads[0]}
        depth = {"encoder_level1": num_blocks[0], "encoder_level2": num_blocks[1],
                 "encoder_level3": num_blocks[2], "latent": num_blocks[3], "decoder_level3": num_blocks[2],
                 "decoder_level2": num_blocks[1], "decoder_level1": num_blocks[0],
                 "refinement": num_refinement_blocks}
        for name in STAGES:
            if widths[name] % n_heads[name]:
                raise ConfigError(f"heads: stage {name} has {widths[name]} channels, not divisible by "
                                  f"{n_heads[name]} heads (heads={heads}, dim={dim})")
        types = _attn_types(attn_types)
        if attn_options is not None and not isinstance(attn_options, Mapping):
            raise ConfigError(f"attn_options: expected a mapping {{attention name: {{kwarg: value}}}}, "
                              f"got {attn_options!r}")
        attn_options = dict(attn_options or {})

        self.inp_channels = inp_channels
        self.use_prior = bool(use_prior)
        self.prior_dim = 4 * embed_dim
        self.num_tokens = group * group
        self.dual_pixel_task = bool(dual_pixel_task)
        self.channels_last = bool(channels_last)
        self.him_levels = _him_levels(him_levels) if self.use_prior else ()
        self.film_bottleneck = bool(film_bottleneck) and self.use_prior
        self.prior_pyramid = bool(prior_pyramid)

        # The pyramid layers are built only when some stage consumes z2 or z3.
        scales = {PRIOR_SCALE[name] for name in self.him_levels}
        if self.film_bottleneck:
            scales.add("z3")
        need_z2 = self.use_prior and self.prior_pyramid and bool(scales & {"z2", "z3"})
        need_z3 = self.use_prior and self.prior_pyramid and "z3" in scales
        if need_z2 and group != 4:
            raise ConfigError(f"group: the prior pyramid (16 -> 4 -> 1 tokens) needs group=4, got {group}; "
                              f"use prior_pyramid=False for another token count")
        if need_z2:
            self.down_1 = token_reducer(self.num_tokens, self.num_tokens // 4, self.prior_dim)
        if need_z3:
            self.down_2 = token_reducer(self.num_tokens // 4, 1, self.prior_dim)

        layer = FastBasicLayer if fused_attention else BasicLayer

        def stage(name: str) -> BasicLayer:
            return layer(widths[name], n_heads[name], depth[name], ffn_expansion_factor, bias, LayerNorm_type,
                              prior_dim=self.prior_dim if name in self.him_levels else None,
                              film_dim=self.prior_dim if (name == "latent" and self.film_bottleneck) else None,
                              attn_type=types[name], attn_options=attn_options.get(types[name]),
                              fused=fused_attention)

        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        add_unet_levels(self, stage, dim, bias)
        if self.dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)
        if zero_init_output:
            nn.init.zeros_(self.output.weight)
            if self.output.bias is not None:
                nn.init.zeros_(self.output.bias)
        self.set_inference_chunk_pixels(inference_chunk_pixels)
        self.checkpoint_levels: frozenset = frozenset()

    def set_checkpoint_levels(self, levels: Sequence[Union[str, int]]) -> None:
        """Recompute the activations of these stages in backward instead of storing them.

        ``levels``: U-Net levels 1-4 (1-3: the encoder and decoder stage of that level,
        4: the latent) and/or stage names (e.g. ``'refinement'``); empty turns it off.
        A chosen stage (its HIM and blocks) runs under ``torch.utils.checkpoint``
        (use_reentrant=False) in training mode with autograd on; results and
        gradients are unchanged, peak training memory drops.
        """
        self.checkpoint_levels = checkpoint_stages(levels)

    def set_inference_chunk_pixels(self, pixels: Optional[int]) -> None:
        """Set the stripe size (pixels) used by every chunk-aware submodule without autograd."""
        if pixels is not None and (not isinstance(pixels, int) or isinstance(pixels, bool) or pixels < 0):
            raise ConfigError(f"inference_chunk_pixels: expected None or an integer >= 0, got {pixels!r}")
        for module in self.modules():
            if hasattr(module, "inference_chunk_pixels"):
                module.inference_chunk_pixels = pixels or None

    # ------------------------------------------------------------------ prior
    def _stage_priors(self, prior: Optional[torch.Tensor], batch: int):
        """Map each stage to its prior tokens (or None) and return the FiLM vector."""
        if not self.use_prior:
            return {}, None
        if prior is None:
            raise ValueError("Transformer was built with use_prior=True, so forward() needs a prior of shape "
                             f"(B, {self.num_tokens}, {self.prior_dim}); build with use_prior=False for the "
                             "prior-free baseline")
        expected = (batch, self.num_tokens, self.prior_dim)
        if prior.dim() != 3 or tuple(prior.shape) != expected:
            raise ValueError(f"prior: expected shape {expected} (B, group**2, 4*embed_dim), "
                             f"got {tuple(prior.shape)}")
        if self.prior_pyramid:
            z2, z3 = prior_pyramid(prior, getattr(self, "down_1", None), getattr(self, "down_2", None))
        else:
            z2, z3 = prior, prior.mean(dim=1)
        by_scale = {"z1": prior, "z2": z2, "z3": z3.unsqueeze(1) if z3 is not None else None}
        tokens = {name: by_scale[PRIOR_SCALE[name]] for name in self.him_levels}
        return tokens, (z3 if self.film_bottleneck else None)

    # ------------------------------------------------------------------ forward
    def _stage(self, name: str, x: torch.Tensor, tokens: Dict[str, torch.Tensor],
               film: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run stage ``name`` on x, a temporary that nobody reads again (a fast stage may reuse its storage)."""
        stage = getattr(self, name)
        if name in self.checkpoint_levels and self.training and torch.is_grad_enabled():
            return checkpoint(stage, x, tokens.get(name), film, use_reentrant=False)
        if isinstance(stage, FastBasicLayer):
            return stage(x, tokens.get(name), film, consume_input=True)
        return stage(x, tokens.get(name), film)

    def forward(self, inp_img: torch.Tensor, prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Deblur ``inp_img`` (B, inp_channels, H, W), H and W multiples of 8, guided by ``prior``.

        ``prior`` is (B, group**2, 4*embed_dim); it is ignored when use_prior=False.
        """
        if inp_img.dim() != 4 or inp_img.shape[1] != self.inp_channels:
            raise ValueError(f"inp_img: expected shape (B, {self.inp_channels}, H, W), got {tuple(inp_img.shape)}")
        b, _, h, w = inp_img.shape
        if h % 8 or w % 8:
            raise ValueError(f"inp_img: H and W must be multiples of 8, got {h}x{w}; pad the image first "
                             "(the inference pipeline does this)")
        tokens, film = self._stage_priors(prior, b)

        x = self.patch_embed(inp_img)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        skip = self.skip_conv(x) if self.dual_pixel_task else None
        enc1 = self._stage("encoder_level1", x, tokens)
        del x
        enc2 = self._stage("encoder_level2", self.down1_2(enc1), tokens)
        enc3 = self._stage("encoder_level3", self.down2_3(enc2), tokens)
        dec = self._stage("latent", self.down3_4(enc3), tokens, film)

        dec = self.reduce_chan_level3(torch.cat([self.up4_3(dec), enc3], 1))
        del enc3
        dec = self._stage("decoder_level3", dec, tokens)
        dec = self.reduce_chan_level2(torch.cat([self.up3_2(dec), enc2], 1))
        del enc2
        dec = self._stage("decoder_level2", dec, tokens)
        dec = torch.cat([self.up2_1(dec), enc1], 1)
        del enc1
        dec = self._stage("decoder_level1", dec, tokens)
        dec = self._stage("refinement", dec, tokens)

        if skip is not None:
            out = self.output(dec + skip)
        else:
            out = self.output(dec) + inp_img
        if not inp_img.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous()
        return out
