"""Swintormer's mixed window attention (SWDA): shifted-window cosine attention + channel attention.

One 1x1 conv and one depthwise 3x3 conv produce q, k, v for two branches that
share the (optionally shifted) 16x16 windows (docs/architecture.md 2):

* spatial branch, ``attn_split * C`` channels: Swin-V2 cosine attention between
  the pixels of a window, logits ``cos(q, k) * exp(min(logit_scale, ln 100))``
  plus the continuous relative-position bias ``16 * sigmoid(cpb_mlp(table))``
  and, in shifted blocks, Swin's region mask;
* channel branch, the other channels: MDTA-style transposed attention (d x d
  per head, q and k L2-normalised over the pixels of the window).

Official quirks (docs/quirks.md, quirks S3, S4), each an option with the official value as default:
``softmax='sink_rowmax'`` (the "+1" softmax whose sink logit is the row max),
``channel_attn_scope='window'`` (the channel branch sees one window, not the
image), ``channel_attn_temperature=False`` (no learned temperature).  As in the
original, the depthwise conv runs on the partitioned windows (each window is
zero-padded at its own border) and the mask only covers the spatial logits, so
the channel branch and the depthwise conv mix the wrapped strips of shifted
windows.

Any map size works: the map is zero-padded to a multiple of the window and the
padding is removed from the keys (masked) and from q, k, v (zeroed); maps that
are already multiples (every map of the published Swintormer) take the exact
published path.

Registered in the attention factory (``attention_registry``) as ``'swda'`` (the
mixed attention) and ``'swin'`` (spatial branch on all channels), so the HI-Diff
U-Net can use them per stage (``Transformer(attn_types=[...])``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from hidiff.archs.attention_registry import register_attention
from hidiff.archs.film import apply_film, film_linears
from hidiff.archs.sample_wise import sample_wise
from hidiff.archs.window_ops import (log_cpb_table, relative_position_index, sink_softmax, window_attention_mask,
                                     window_merge, window_partition)
from hidiff.errors import ConfigError
from hidiff.utils.suggest import did_you_mean

SOFTMAX_TYPES = ("sink_rowmax", "standard")
CHANNEL_SCOPES = ("window", "global")
LOGIT_SCALE_MAX = math.log(100.0)
CPB_HIDDEN = 512


def _wide(t: torch.Tensor) -> torch.Tensor:
    """t in float32, or in its own dtype if wider (float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _choice(value: str, choices, key: str) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: got {value!r}{did_you_mean(str(value), choices)}; expected one of "
                          f"{', '.join(choices)}")
    return value


class SWDA(nn.Module):
    """Shifted-window cosine attention on ``attn_split`` of the channels, channel attention on the rest.

    Its window padding and attention masks are worked out in Python from the image size, so a traced or
    exported graph holds the example size's (``size_fixed_in_graph``; the exporters say so).

    Args:
        dim: channels C of the (B, C, H, W) input.
        num_heads: heads of *each* branch (each branch splits its channels into this many heads).
        bias: bias of the qkv, depthwise and output convs (official False).
        window_size: side of the square windows (official 16).
        shift_size: cyclic shift of this block (official: 0 on even blocks, window/2 on odd ones).
        attn_split: fraction of channels in the spatial branch: 0.5 official, 1.0 = window
            attention only ('swin'), 0.0 = windowed channel attention only.
        softmax: ``'sink_rowmax'`` (official) or ``'standard'``.
        channel_attn_scope: ``'window'`` (official) or ``'global'`` (the channel branch attends
            over all pixels of the image, as Restormer's MDTA).
        channel_attn_temperature: learned per-head temperature in the channel branch (MDTA has
            one; the official SWDA does not).
        film_dim: width of a prior vector that FiLM-modulates the input (HI-Diff bottleneck).
    """

    size_fixed_in_graph = True

    def __init__(self, dim: int, num_heads: int, bias: bool = False, window_size: int = 16, shift_size: int = 0,
                 attn_split: float = 0.5, softmax: str = "sink_rowmax", channel_attn_scope: str = "window",
                 channel_attn_temperature: bool = False, film_dim: Optional[int] = None) -> None:
        super().__init__()
        if not isinstance(window_size, int) or isinstance(window_size, bool) or window_size < 2:
            raise ConfigError(f"window_size: expected an integer >= 2, got {window_size!r}")
        if not isinstance(shift_size, int) or isinstance(shift_size, bool) or not 0 <= shift_size < window_size:
            raise ConfigError(f"shift_size: expected an integer in [0, window_size={window_size}), got "
                              f"{shift_size!r}")
        if not 0.0 <= float(attn_split) <= 1.0:
            raise ConfigError(f"attn_split: expected a fraction in [0, 1], got {attn_split!r}")
        spatial = int(round(dim * float(attn_split)))
        channel = dim - spatial
        for name, width in (("spatial", spatial), ("channel", channel)):
            if width % num_heads:
                raise ConfigError(f"SWDA: the {name} branch has {width} channels (dim={dim}, attn_split="
                                  f"{attn_split}), not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.spatial_dim = spatial
        self.channel_dim = channel
        self.softmax = _choice(softmax, SOFTMAX_TYPES, "softmax")
        self.channel_attn_scope = _choice(channel_attn_scope, CHANNEL_SCOPES, "channel_attn_scope")

        # Creation order fixes the official state_dict order.
        if spatial:
            self.logit_scale = nn.Parameter(torch.log(10.0 * torch.ones(num_heads, 1, 1)))
            self.cpb_mlp = nn.Sequential(nn.Linear(2, CPB_HIDDEN, bias=True), nn.ReLU(),
                                         nn.Linear(CPB_HIDDEN, num_heads, bias=False))
            self.register_buffer("relative_coords_table", log_cpb_table(window_size), persistent=False)
            self.register_buffer("relative_position_index", relative_position_index(window_size),
                                 persistent=False)
        if channel and channel_attn_temperature:
            self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.ln1, self.ln2 = sample_wise(*film_linears(film_dim, dim))

    # ----------------------------------------------------------------- pieces
    def position_bias(self) -> torch.Tensor:
        """(heads, L, L) relative-position bias ``16 * sigmoid(cpb_mlp(table)[index])``."""
        table = self.cpb_mlp(self.relative_coords_table)                  # ((2ws-1)^2, heads)
        l = self.window_size ** 2
        bias = table[self.relative_position_index.reshape(-1)].reshape(l, l, -1).permute(2, 0, 1)
        return 16.0 * torch.sigmoid(bias)

    def _softmax(self, logits: torch.Tensor) -> torch.Tensor:
        logits = _wide(logits)
        return sink_softmax(logits) if self.softmax == "sink_rowmax" else torch.softmax(logits, dim=-1)

    def _spatial(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: int,
                 mask: Optional[torch.Tensor]) -> torch.Tensor:
        bw, c, ws, _ = q.shape
        heads, l = self.num_heads, ws * ws

        def tokens(t: torch.Tensor) -> torch.Tensor:  # (Bw, c, ws, ws) -> (Bw, heads, L, d)
            return t.reshape(bw, heads, c // heads, l).transpose(-2, -1)

        q, k, v = tokens(q), tokens(k), tokens(v)
        logits = F.normalize(_wide(q), dim=-1) @ F.normalize(_wide(k), dim=-1).transpose(-2, -1)
        scale = _wide(torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp())
        logits = logits * scale + _wide(self.position_bias())
        if mask is not None:  # (nW, L|1, L), shared by every image and head
            logits = (logits.view(batch, -1, heads, l, l) + mask.unsqueeze(1)).view(bw, heads, l, l)
        out = self._softmax(logits).to(v.dtype) @ v                      # (Bw, heads, L, d)
        return out.transpose(-2, -1).reshape(bw, c, ws, ws)

    def _channel(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Transposed attention over the pixels of each map in the batch: (N, c, h, w) -> (N, c, h, w)."""
        n, c, h, w = q.shape
        heads = self.num_heads
        q = F.normalize(_wide(q.reshape(n, heads, c // heads, h * w)), dim=-1)
        k = F.normalize(_wide(k.reshape(n, heads, c // heads, h * w)), dim=-1)
        logits = q @ k.transpose(-2, -1)                                 # (N, heads, d, d)
        if hasattr(self, "temperature"):
            logits = logits * _wide(self.temperature)
        v = v.reshape(n, heads, c // heads, h * w)
        return (self._softmax(logits).to(v.dtype) @ v).reshape(n, c, h, w)

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = apply_film(x, self.ln1, self.ln2, film, "SWDA")
        b, c, h, w = x.shape
        ws, shift = self.window_size, self.shift_size
        hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
        # The 1x1 conv commutes with padding-free rolling and partitioning; the depthwise conv
        # does not, so it runs on the windows (each zero-padded at its own border, as published).
        qkv = self.qkv(x)
        if (hp, wp) != (h, w):
            qkv = F.pad(qkv, (0, wp - w, 0, hp - h))
        if shift:
            qkv = torch.roll(qkv, shifts=(-shift, -shift), dims=(2, 3))
        windows = self.qkv_dwconv(window_partition(qkv, ws))            # (B*nW, 3C, ws, ws)
        if (hp, wp) != (h, w):
            valid = torch.zeros(1, 1, hp, wp, dtype=windows.dtype, device=windows.device)
            valid[..., :h, :w] = 1
            if shift:
                valid = torch.roll(valid, shifts=(-shift, -shift), dims=(2, 3))
            n_win = (hp // ws) * (wp // ws)
            windows = (windows.view(b, n_win, 3 * c, ws, ws)
                       * window_partition(valid, ws).view(1, n_win, 1, ws, ws)).view(b * n_win, 3 * c, ws, ws)

        cs, cc = self.spatial_dim, self.channel_dim
        q_s, k_s, v_s, q_c, k_c, v_c = windows.split([cs, cs, cs, cc, cc, cc], dim=1)
        parts = []
        if cs:
            mask = window_attention_mask(hp, wp, ws, shift, h, w, windows.device)
            parts.append(self._spatial(q_s, k_s, v_s, b, mask))
        if cc:
            if self.channel_attn_scope == "window":
                parts.append(self._channel(q_c, k_c, v_c))
            else:  # all pixels of the image (their order is irrelevant; padding is zero)
                merged = self._channel(window_merge(q_c, hp, wp), window_merge(k_c, hp, wp),
                                       window_merge(v_c, hp, wp))
                parts.append(window_partition(merged, ws))
        out = window_merge(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0], hp, wp)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(2, 3))
        if (hp, wp) != (h, w):
            out = out[..., :h, :w]
        return self.project_out(out)


# ------------------------------------------------------------------ factory entries
def _block_shift(window_size: int, shift_size: Optional[int], block_index: Optional[int]) -> int:
    """Shift of one block: ``shift_size`` (default window/2) on odd blocks, 0 on even ones.

    Without a ``block_index`` (a caller that does not number its blocks) every
    block gets ``shift_size``, which defaults to 0 then.
    """
    if block_index is None:
        return 0 if shift_size is None else shift_size
    size = window_size // 2 if shift_size is None else shift_size
    return size if block_index % 2 else 0


@register_attention("swda")
def build_swda(dim: int, num_heads: int, bias: bool = False, film_dim: Optional[int] = None, fused: bool = True,
               window_size: int = 16, shift_size: Optional[int] = None, block_index: Optional[int] = None,
               attn_split: float = 0.5, softmax: str = "sink_rowmax", channel_attn_scope: str = "window",
               channel_attn_temperature: bool = False) -> SWDA:
    """Swintormer's mixed attention for the attention factory (``fused`` is accepted and unused:
    there is one implementation)."""
    return SWDA(dim, num_heads, bias, window_size=window_size,
                shift_size=_block_shift(window_size, shift_size, block_index), attn_split=attn_split,
                softmax=softmax, channel_attn_scope=channel_attn_scope,
                channel_attn_temperature=channel_attn_temperature, film_dim=film_dim)


@register_attention("swin")
def build_swin(dim: int, num_heads: int, bias: bool = False, film_dim: Optional[int] = None, fused: bool = True,
               window_size: int = 16, shift_size: Optional[int] = None, block_index: Optional[int] = None,
               softmax: str = "sink_rowmax") -> SWDA:
    """Shifted-window cosine attention on all channels (SWDA with ``attn_split=1``)."""
    return SWDA(dim, num_heads, bias, window_size=window_size,
                shift_size=_block_shift(window_size, shift_size, block_index), attn_split=1.0,
                softmax=softmax, film_dim=film_dim)
