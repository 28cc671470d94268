"""Swintormer (arXiv 2401.05907) as shipped, plus HI-Diff's latent prior as an option.

Layout (docs/architecture.md 2; C = ``dim``): pixel-unshuffle(2) stem and 3x3 conv to
C at H/2; four levels of SWDA Transformer blocks (C, 2C, 4C, 8C at H/2 ... H/16);
decoder levels 3 and 2 reduce [up, skip] with a 1x1 conv, decoder level 1 keeps
the 2C-channel concatenation; refinement at H/2; ``skip_conv`` (1x1 from the
stem output) is added before the 3x3 head and pixel-shuffle(2) back to H.  The
image lives in [-1, 1] inside the net and the first three input channels are
the global residual.  With default arguments this is the published network:
25,177,224 parameters, state_dict keys and shapes equal to the authors' class
(479 entries), so their weights load with ``strict=True``.

Differences from the shipped class, none of which changes the published maths:
any H, W (mirror-padded to ``size_multiple`` = 2 * 8 * window = 256, cropped
back) instead of a crash; ``inp_channels`` is honoured (6 dual-pixel views or 3
for single-image and motion deblurring); the shift masks are cached;
``torch.utils.checkpoint`` replaces fairscale.

``prior='hidiff_latent'`` gives the network HI-Diff's compact prior z (B, 16,
4*embed_dim): the prior pyramid (``down_1``, ``down_2``), one HIM before the first
block of each stage in ``him_levels`` and FiLM of the bottleneck blocks by z3,
exactly as in HI-Diff's U-Net (docs/architecture.md 1.2).  The layers shared with the
published network keep their names, so a published checkpoint initialises the
prior variant with ``strict=False`` (only prior layers are missing).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from hidiff.archs.attention_registry import attention_types, build_attention
from hidiff.archs.fast.gdfn import FastGDFN
from hidiff.archs.fast.him import FastHIM
from hidiff.archs.film import apply_film, film_linears
from hidiff.archs.prior_pyramid import prior_pyramid, token_reducer
from hidiff.archs.sample_wise import sample_wise
from hidiff.archs.swin_attention import SWDA  # noqa: F401  (registers 'swin' and 'swda')
from hidiff.archs.transformer_block import TransformerBlock
from hidiff.archs.unet_levels import STAGES, add_unet_levels, checkpoint_stages
from hidiff.errors import ConfigError
from hidiff.utils.padding import pad_to_multiple
from hidiff.registry import ARCH_REGISTRY
from hidiff.utils.suggest import did_you_mean

#: pyramid level of the prior each stage's HIM reads (as HI-Diff: levels 2 and 3 both use z2)
PRIOR_SCALE = {"encoder_level1": "z1", "encoder_level2": "z2", "encoder_level3": "z2", "latent": "z3",
               "decoder_level3": "z2", "decoder_level2": "z2", "decoder_level1": "z1", "refinement": "z1"}
#: U-Net level (0-3) whose settings (heads, attention type) a stage uses
STAGE_LEVEL = {"encoder_level1": 0, "encoder_level2": 1, "encoder_level3": 2, "latent": 3,
               "decoder_level3": 2, "decoder_level2": 1, "decoder_level1": 0, "refinement": 0}
PRIORS = ("none", "hidiff_latent")
FFN_TYPES = ("glu_plain", "gdfn")
DP_ORDERS = ("RL", "LR")
RESIDUALS = ("first3", "views_mean", "none")
WINDOWED = ("swin", "swda")


class GatedFFN(nn.Module):
    """Swintormer's feed-forward: 1x1 conv to 2h, ``a * b`` of the two halves (no activation), 1x1 back.

    h = int(dim * ffn_expansion_factor); unlike Restormer's GDFN there is no depthwise
    conv and no GELU.  ``film_dim`` adds HI-Diff's FiLM of the input.
    """

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool = False,
                 film_dim: Optional[int] = None) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        if hidden < 1:
            raise ConfigError(f"ffn_expansion_factor={ffn_expansion_factor} gives no hidden channels")
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)
        self.ln1, self.ln2 = sample_wise(*film_linears(film_dim, dim))

    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = apply_film(x, self.ln1, self.ln2, film, "GatedFFN")
        a, g = self.project_in(x).chunk(2, dim=1)
        return self.project_out(a * g)


def swintormer_block(dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, attn_type: str,
                     attn_options: Mapping, ffn_type: str, film_dim: Optional[int] = None) -> TransformerBlock:
    """Pre-norm block x + attn(LN(x)), then x + ffn(LN(x)), with Swintormer's attention and FFN choices.

    ``'gdfn'`` and ``'mdta'`` use the CPU-fast formulations (:mod:`hidiff.archs.fast`).
    """
    attn = build_attention(attn_type, dim, num_heads, bias, film_dim=film_dim, **attn_options)
    if ffn_type == "glu_plain":
        ffn: nn.Module = GatedFFN(dim, ffn_expansion_factor, bias, film_dim=film_dim)
    else:
        ffn = FastGDFN(dim, ffn_expansion_factor, bias, film_dim=film_dim)
    return TransformerBlock(dim, attn, ffn, "WithBias")


class Stage(nn.ModuleList):
    """The blocks of one stage (keys ``<stage>.<i>.*`` as published); ``film`` feeds every block."""

    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None) -> torch.Tensor:
        for block in self:
            x = block(x, film)
        return x


class PixelUnshuffleStem(nn.Module):
    """PixelUnshuffle(2) then a 3x3 conv 4*in -> dim (key ``proj2``)."""

    def __init__(self, in_channels: int, dim: int, bias: bool = False) -> None:
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(2)
        self.proj2 = nn.Conv2d(in_channels * 4, dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj2(self.unshuffle(x))


def _init_weights(m: nn.Module) -> None:
    """Official init: truncated normal (std 0.02) for conv/linear weights, zero biases, LN (1, 0)."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _int_list(value, n: int, key: str) -> list:
    if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != n
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ConfigError(f"{key}: expected a list of {n} positive integers, got {value!r}")
    return list(value)


def _choice(value, choices, key: str) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: got {value!r}{did_you_mean(str(value), choices)}; expected one of "
                          f"{', '.join(choices)}")
    return value


def _per_level_attn(value) -> list:
    """``attn_types``: one name or a list of 4 (levels 1-4; decoders and refinement follow their level)."""
    types = [value] * 4 if isinstance(value, str) else value
    if isinstance(types, (str, bytes)) or not isinstance(types, Sequence) or len(types) != 4:
        raise ConfigError(f"attn_types: expected an attention name or a list of 4 (levels 1-4), got {value!r}")
    known = attention_types()
    for i, name in enumerate(types):
        if name not in known:
            raise ConfigError(f"attn_types[{i}]: unknown attention type {name!r}{did_you_mean(str(name), known)}; "
                              f"known types: {', '.join(known)}")
    return list(types)


def _stage_list(value, key: str, default: Sequence[str]) -> tuple:
    if value is None:
        return tuple(default)
    if isinstance(value, bool):
        return tuple(STAGES) if value else ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"{key}: expected a list of stage names from {list(STAGES)}, got {value!r}")
    for name in value:
        if name not in STAGES:
            raise ConfigError(f"{key}: unknown stage {name!r}{did_you_mean(str(name), STAGES)}; "
                              f"stages: {', '.join(STAGES)}")
    return tuple(dict.fromkeys(value))


@ARCH_REGISTRY.register()
class Swintormer(nn.Module):
    """Swintormer; defaults build the published dual-pixel network (see the module docstring).

    Args:
        inp_channels: 6 (dual-pixel views) or 3 (single image / motion blur); any positive count.
        out_channels: output channels (3).
        dim, num_blocks (4 levels), num_refinement_blocks, heads (4 levels),
        ffn_expansion_factor, bias: as published (48, [2,4,6,8], 4, [1,2,4,8], 2.66, False).
        window_size: attention window at every level (16); the input is padded to
            ``size_multiple = 2 * 2**3 * window_size``.
        shift_size: cyclic shift of the odd blocks of each stage (default window_size // 2;
            0 disables shifting).
        attn_types: attention per level, one name or 4 (levels 1-4; decoders and the
            refinement use their level's type): 'swda' (published), 'swin', 'mdta'.
        attn_split, softmax, channel_attn_scope, channel_attn_temperature: SWDA options
            (0.5, 'sink_rowmax', 'window', False published; see ``swin_attention.SWDA``).
        ffn_type: 'glu_plain' (published) or 'gdfn' (Restormer's, with depthwise conv and GELU).
        dual_pixel_order: order of the two views in a 6-channel input, 'RL' (published: R view
            in channels 0-2) or 'LR' (Restormer's datasets); 'LR' swaps the halves first, so
            the layers always see the published order and published weights stay valid.
        residual_from: global image residual: 'first3' (published: channels 0-2 of the
            R-L input, i.e. the R view), 'views_mean' (mean of the two views) or 'none'.
        prior: 'none' (published) or 'hidiff_latent' (HI-Diff's prior; forward(x, z)).
        embed_dim, group: HI-Diff prior shape, z = (B, group**2, 4*embed_dim).
        him_levels: stages that get a HIM (default: all but 'latent', as HI-Diff).
        film_bottleneck: FiLM the latent blocks with z3 (as HI-Diff).
        grad_checkpoint: recompute activations in backward: True for all stages or a list of
            stage names (the published training wrapped all but encoder_level1).
    """

    def __init__(self, inp_channels: int = 6, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (2, 4, 6, 8), num_refinement_blocks: int = 4,
                 heads: Sequence[int] = (1, 2, 4, 8), window_size: int = 16, shift_size: Optional[int] = None,
                 ffn_expansion_factor: float = 2.66, bias: bool = False,
                 attn_types: Union[str, Sequence[str]] = "swda", attn_split: float = 0.5,
                 softmax: str = "sink_rowmax", channel_attn_scope: str = "window",
                 channel_attn_temperature: bool = False, ffn_type: str = "glu_plain",
                 dual_pixel_order: str = "RL", residual_from: str = "first3", prior: str = "none",
                 embed_dim: int = 64, group: int = 4, him_levels: Optional[Sequence[str]] = None,
                 film_bottleneck: bool = True, grad_checkpoint: Union[bool, Sequence[str]] = False) -> None:
        super().__init__()
        num_blocks = _int_list(num_blocks, 4, "num_blocks")
        heads = _int_list(heads, 4, "heads")
        for key, val in (("inp_channels", inp_channels), ("out_channels", out_channels), ("dim", dim)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {val!r}")
        if dim % 2:
            raise ConfigError(f"dim: must be even (the downsamplers halve it), got {dim}")
        if not isinstance(num_refinement_blocks, int) or num_refinement_blocks < 0:
            raise ConfigError(f"num_refinement_blocks: expected an integer >= 0, got {num_refinement_blocks!r}")
        if not isinstance(window_size, int) or isinstance(window_size, bool) or window_size < 2:
            raise ConfigError(f"window_size: expected an integer >= 2, got {window_size!r}")
        shift = window_size // 2 if shift_size is None else shift_size
        if not isinstance(shift, int) or isinstance(shift, bool) or not 0 <= shift < window_size:
            raise ConfigError(f"shift_size: expected an integer in [0, {window_size}), got {shift_size!r}")
        types = _per_level_attn(attn_types)
        self.ffn_type = _choice(ffn_type, FFN_TYPES, "ffn_type")
        self.dual_pixel_order = _choice(dual_pixel_order, DP_ORDERS, "dual_pixel_order")
        self.residual_from = _choice(residual_from, RESIDUALS, "residual_from")
        self.prior = _choice(prior, PRIORS, "prior")
        if dual_pixel_order != "RL" and inp_channels != 6:
            raise ConfigError(f"dual_pixel_order: '{dual_pixel_order}' needs a 6-channel dual-pixel input, "
                              f"got inp_channels={inp_channels}")
        if residual_from == "views_mean" and inp_channels != 6:
            raise ConfigError("residual_from: 'views_mean' needs a 6-channel dual-pixel input")
        if residual_from != "none" and (inp_channels < out_channels or out_channels != 3):
            raise ConfigError(f"residual_from: an image residual needs out_channels=3 and inp_channels >= 3, got "
                              f"inp_channels={inp_channels}, out_channels={out_channels}; use residual_from: none")

        self.inp_channels = inp_channels
        self.out_channels = out_channels
        self.window_size = window_size
        windowed = any(t in WINDOWED for t in types)
        #: H and W are padded to this: two-fold stem, three downsamplings, then whole windows.
        self.size_multiple = 2 * 2 ** 3 * (window_size if windowed else 1)

        use_prior = self.prior == "hidiff_latent"
        self.prior_dim = 4 * embed_dim
        self.num_tokens = group * group
        self.him_levels = _stage_list(him_levels, "him_levels", [s for s in STAGES if s != "latent"]) \
            if use_prior else ()
        self.film_bottleneck = bool(film_bottleneck) and use_prior
        ckpt = _stage_list(grad_checkpoint if grad_checkpoint else [], "grad_checkpoint", [])
        self.checkpointed = frozenset(ckpt)

        widths = [dim, dim * 2, dim * 4, dim * 8]
        width = {s: widths[STAGE_LEVEL[s]] for s in STAGES}
        width.update(decoder_level1=dim * 2, refinement=dim * 2)
        depth = {s: num_blocks[STAGE_LEVEL[s]] for s in STAGES}
        depth["refinement"] = num_refinement_blocks
        window_opts = dict(window_size=window_size, softmax=softmax)

        def stage(name: str) -> Stage:
            level = STAGE_LEVEL[name]
            kind = types[level]
            film = self.prior_dim if (name == "latent" and self.film_bottleneck) else None
            blocks = []
            for i in range(depth[name]):
                opts: dict = {}
                if kind in WINDOWED:
                    opts = dict(window_opts, shift_size=shift if i % 2 else 0)
                if kind == "swda":
                    opts.update(attn_split=attn_split, channel_attn_scope=channel_attn_scope,
                                channel_attn_temperature=channel_attn_temperature)
                blocks.append(swintormer_block(width[name], heads[level], ffn_expansion_factor, bias, kind, opts,
                                               self.ffn_type, film_dim=film))
            return Stage(blocks)

        # Creation order = the published state_dict order.
        self.patch_embed = PixelUnshuffleStem(inp_channels, dim, bias)
        add_unet_levels(self, stage, dim, bias)
        self.skip_conv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.apply(_init_weights)
        # docs/quirks.md, quirk S6: the head is created after the init pass and keeps PyTorch's default init.
        self.output = nn.Sequential(nn.Conv2d(dim * 2, out_channels * 4, kernel_size=3, padding=1, bias=bias),
                                    nn.PixelShuffle(2))

        if use_prior:
            self._build_prior(widths, heads, group, bias)

    def _build_prior(self, widths: Sequence[int], heads: Sequence[int], group: int, bias: bool) -> None:
        """HI-Diff's prior layers, with PyTorch default init as in HI-Diff (the FiLM linears included)."""
        scales = {PRIOR_SCALE[s] for s in self.him_levels} | ({"z3"} if self.film_bottleneck else set())
        if scales & {"z2", "z3"}:
            if group != 4:
                raise ConfigError(f"group: HI-Diff's prior pyramid (16 -> 4 -> 1 tokens) needs group=4, got {group}")
            self.down_1 = token_reducer(self.num_tokens, self.num_tokens // 4, self.prior_dim)
        if "z3" in scales:
            self.down_2 = token_reducer(self.num_tokens // 4, 1, self.prior_dim)
        stage_width = {s: widths[STAGE_LEVEL[s]] for s in STAGES}
        stage_width.update(decoder_level1=widths[0] * 2, refinement=widths[0] * 2)
        self.hims = nn.ModuleDict({s: FastHIM(stage_width[s], heads[STAGE_LEVEL[s]], self.prior_dim, bias)
                                   for s in self.him_levels})
        for block in self.latent:
            for m in (block.attn, block.ffn):
                for lin in (getattr(m, "ln1", None), getattr(m, "ln2", None)):
                    if lin is not None:
                        lin.reset_parameters()

    def set_checkpoint_levels(self, levels: Sequence[Union[str, int]]) -> None:
        """Recompute these stages' blocks in backward (training with autograd only); replaces ``grad_checkpoint``.

        ``levels``: U-Net levels 1-4 (1-3: the encoder and decoder stage of that level,
        4: the latent) and/or stage names; empty turns checkpointing off.
        """
        self.checkpointed = checkpoint_stages(levels)

    # ------------------------------------------------------------------ helpers
    def _check_inputs(self, x: torch.Tensor, prior: Optional[torch.Tensor]) -> None:
        if x.dim() != 4 or x.shape[1] != self.inp_channels:
            raise ValueError(f"Swintormer: expected input of shape (B, {self.inp_channels}, H, W), got "
                             f"{tuple(x.shape)}")
        if self.prior == "none":
            if prior is not None:
                raise ValueError("Swintormer was built with prior='none' but forward() got a prior; build it "
                                 "with prior='hidiff_latent' to use HI-Diff's prior, or call net(x)")
            return
        expected = (x.shape[0], self.num_tokens, self.prior_dim)
        if prior is None or tuple(prior.shape) != expected:
            got = None if prior is None else tuple(prior.shape)
            raise ValueError(f"Swintormer(prior='hidiff_latent'): forward(x, prior) needs a prior of shape "
                             f"{expected} (B, group**2, 4*embed_dim), got {got}")

    def _stage(self, name: str, x: torch.Tensor, tokens: dict, film: Optional[torch.Tensor]) -> torch.Tensor:
        if name in self.him_levels:
            x = self.hims[name](x, tokens[PRIOR_SCALE[name]])
        blocks: Stage = getattr(self, name)
        film = film if name == "latent" else None
        if name in self.checkpointed and self.training and torch.is_grad_enabled():
            return checkpoint(blocks, x, film, use_reentrant=False)
        return blocks(x, film)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Deblur ``x`` (B, inp_channels, H, W) in [0, 1], any H and W; returns (B, out_channels, H, W).

        The output is not clamped.  ``prior`` is required with ``prior='hidiff_latent'`` and
        refused otherwise.
        """
        self._check_inputs(x, prior)
        x, size = pad_to_multiple(x, self.size_multiple)
        x = x * 2.0 - 1.0
        if self.dual_pixel_order == "LR":
            x = torch.cat([x[:, 3:], x[:, :3]], dim=1)
        tokens: dict = {}
        film = None
        if self.prior == "hidiff_latent":
            z2, z3 = prior_pyramid(prior, getattr(self, "down_1", None), getattr(self, "down_2", None))
            tokens = {"z1": prior, "z2": z2, "z3": None if z3 is None else z3.unsqueeze(1)}
            film = z3 if self.film_bottleneck else None

        stem = self.patch_embed(x)
        enc1 = self._stage("encoder_level1", stem, tokens, film)
        enc2 = self._stage("encoder_level2", self.down1_2(enc1), tokens, film)
        enc3 = self._stage("encoder_level3", self.down2_3(enc2), tokens, film)
        dec = self._stage("latent", self.down3_4(enc3), tokens, film)
        dec = self.reduce_chan_level3(torch.cat([self.up4_3(dec), enc3], dim=1))
        dec = self._stage("decoder_level3", dec, tokens, film)
        dec = self.reduce_chan_level2(torch.cat([self.up3_2(dec), enc2], dim=1))
        dec = self._stage("decoder_level2", dec, tokens, film)
        dec = torch.cat([self.up2_1(dec), enc1], dim=1)
        dec = self._stage("decoder_level1", dec, tokens, film)
        dec = self._stage("refinement", dec, tokens, film)
        out = self.output(dec + self.skip_conv(stem))
        if self.residual_from == "first3":
            out = out + x[:, :3]
        elif self.residual_from == "views_mean":
            out = out + 0.5 * (x[:, :3] + x[:, 3:6])
        out = (out + 1.0) / 2.0
        return out[..., : size[0], : size[1]]
