"""Restormer building blocks (Zamir et al. 2022) with HI-Diff's optional FiLM input.

Parameter names mirror the official checkpoints (``body.weight``, ``qkv_dwconv``,
``project_in`` ...), so released weights load strictly.

Performance notes (the U-Net is benchmarked on CPU at 1280x720):
- Every block works on either memory format but is fastest on ``channels_last``
  maps: the per-pixel LayerNorm then normalises a contiguous last axis, depthwise
  convs run ~2-5x faster, and token views are free (no ``to_3d``/``to_4d`` copies).
- Without autograd, MDTA and GDFN work through row stripes of at most
  ``inference_chunk_pixels`` pixels (one halo row per side for the 3x3 depthwise
  convs), normalising their input stripe by stripe (``takes_norm``), and residuals
  are accumulated in place; a block then holds about two full-size maps.
- Normalisation and softmax statistics are computed in fp32 even when the input is
  fp16/bf16 (autocast), then cast back.

Attention is pluggable: ``register_attention(name)`` adds a builder that
``build_attention(name, dim, num_heads, bias, **kw)`` can construct, so other
architectures (e.g. Swintormer's window attention) add types without editing this
file.  Only ``'mdta'`` is defined here.
"""
from __future__ import annotations

import inspect
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hidiff.archs.sample_wise import SampleWiseLinear, per_sample
from hidiff.errors import ConfigError
from hidiff.utils.suggest import did_you_mean

_REDUCED = (torch.float16, torch.bfloat16)
LN_EPS = 1e-5
LAYER_NORM_TYPES = ("WithBias", "BiasFree")


def softmax_fp32(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax computed in fp32 (also under autocast), returned in fp32."""
    return torch.softmax(x.float(), dim=dim)


def film_linears(film_dim: Optional[int], dim: int) -> Tuple[Optional[nn.Linear], Optional[nn.Linear]]:
    """The bottleneck FiLM pair (``ln1`` -> scale, ``ln2`` -> shift) of a block, or (None, None)."""
    if not film_dim:
        return None, None
    return SampleWiseLinear(film_dim, dim), SampleWiseLinear(film_dim, dim)


def apply_film(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """FiLM a (B,C,H,W) map with per-sample (B,C) vectors: ``x * scale + shift``."""
    b, c = scale.shape
    return x * scale.view(b, c, 1, 1) + shift.view(b, c, 1, 1)


def row_stripes(height: int, width: int, max_pixels: Optional[int]) -> List[Tuple[int, int]]:
    """Split rows [0, height) into stripes of at most ``max_pixels`` pixels (one stripe if None/0)."""
    if not max_pixels or height * width <= max_pixels:
        return [(0, height)]
    rows = max(1, max_pixels // width)
    return [(r, min(r + rows, height)) for r in range(0, height, rows)]


Prep = Callable[[torch.Tensor], torch.Tensor]


def halo_rows(x: torch.Tensor, r0: int, r1: int, prep: Optional[Prep] = None) -> Tuple[torch.Tensor, int]:
    """Rows [r0-1, r1+1) (clipped to the map) of x through ``prep``, and where row r0 sits in them.

    ``prep`` is per-pixel (LayerNorm, FiLM), so it may run on a stripe.  The one halo
    row per side is what a 3x3 depthwise conv needs to be exact inside the stripe.
    """
    a, z = max(r0 - 1, 0), min(r1 + 1, x.shape[2])
    rows = x[:, :, a:z]
    return (rows if prep is None else prep(rows)), r0 - a


def pointwise_depthwise(pw: nn.Conv2d, dw: nn.Conv2d, u: torch.Tensor, lo: int, hi: int,
                        top: int = 0, rows: Optional[int] = None) -> torch.Tensor:
    """Channels [lo, hi) of ``dw(pw(u))`` (1x1 conv then depthwise 3x3, padding 1), output rows [top, top+rows).

    Computing the channel groups of a layer separately keeps each result contiguous
    (fast elementwise ops) and lets the caller free one group before the next.
    """
    y = F.conv2d(u, pw.weight[lo:hi], None if pw.bias is None else pw.bias[lo:hi])
    y = F.conv2d(y, dw.weight[lo:hi], None if dw.bias is None else dw.bias[lo:hi], padding=1, groups=hi - lo)
    if rows is None or (top == 0 and rows == y.shape[2]):
        return y
    return y[:, :, top:top + rows]


def branch_input(norm: Optional[nn.Module], ln1: Optional[nn.Linear], ln2: Optional[nn.Linear],
                 film: Optional[torch.Tensor], owner: str) -> Optional[Prep]:
    """Per-pixel pre-processing of a branch input: optional LayerNorm, then optional FiLM (None if neither)."""
    if ln1 is not None:
        if film is None:
            raise ValueError(f"{owner} was built with FiLM (film_dim set) but got film=None")
        scale, shift = ln1(film), ln2(film)
    elif norm is None:
        return None

    def prep(rows: torch.Tensor) -> torch.Tensor:
        u = rows if norm is None else norm(rows)
        return u if ln1 is None else apply_film(u, scale, shift)

    return prep


def matmul_into(dst: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """dst[...] = a @ b for a (B, n, k) and b (k, m) or (B, k, m), dst (B, rows, W, m); no temporary if possible."""
    b = b.to(a.dtype)
    autocast = a.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(a.device.type)  # 'meta' has none
    if dst.is_contiguous() and dst.dtype == a.dtype and not autocast:
        torch.matmul(a, b, out=dst.view(a.shape[0], -1, dst.shape[-1]))
    else:
        dst.copy_(torch.matmul(a, b).view(dst.shape))


def residual_add(x: torch.Tensor, y: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """x + y without a new full-size allocation when autograd is off.

    The sum goes into x's storage when ``inplace`` (the caller hands x over), else
    into y's (a fresh branch output).  With autograd on it is a plain ``x + y``.
    """
    if torch.is_grad_enabled() or y.shape != x.shape:
        return x + y
    dtype = torch.result_type(x, y)
    if inplace and x.dtype == dtype:
        return x.add_(y)
    return y.add_(x) if y.dtype == dtype else x + y


# --------------------------------------------------------------------------- LayerNorm
class _WithBiasNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased var)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in _REDUCED:
            y = F.layer_norm(x.float(), x.shape[-1:], self.weight.float(), self.bias.float(), LN_EPS)
            return y.to(x.dtype)
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, LN_EPS)


class _BiasFreeNorm(nn.Module):
    """x / sqrt(var + eps) * weight over the last axis: var is centred, x is not."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in _REDUCED else x
        var = xf.var(dim=-1, keepdim=True, unbiased=False)
        y = xf * torch.rsqrt(var + LN_EPS) * self.weight.to(xf.dtype)
        return y.to(x.dtype)


class LayerNorm(nn.Module):
    """Channel LayerNorm: per pixel for (B,C,H,W) maps, over the last axis for (B,N,C) tokens.

    ``LayerNorm_type`` is ``'WithBias'`` (all shipped configs) or ``'BiasFree'``.
    Maps are normalised through a (B,H,W,C) view, which is copy-free for
    channels_last input; the result has channels_last strides.
    """

    def __init__(self, dim: int, LayerNorm_type: str = "WithBias") -> None:
        super().__init__()
        if LayerNorm_type not in LAYER_NORM_TYPES:
            raise ConfigError(
                f"LayerNorm_type: unknown value {LayerNorm_type!r}"
                f"{did_you_mean(str(LayerNorm_type), LAYER_NORM_TYPES)}; expected one of {list(LAYER_NORM_TYPES)}")
        self.body = _WithBiasNorm(dim) if LayerNorm_type == "WithBias" else _BiasFreeNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.body(x)


# --------------------------------------------------------------------------- attention factory
AttentionBuilder = Callable[..., nn.Module]
_ATTENTION: Dict[str, AttentionBuilder] = {}


def register_attention(name: str) -> Callable[[AttentionBuilder], AttentionBuilder]:
    """Decorator: make ``builder`` available to ``build_attention(name, ...)``.

    Contract for a builder: it is called as ``builder(dim=, num_heads=, bias=,
    film_dim=, fused=, **options)`` and returns a module whose
    ``forward(x, film=None)`` maps a (B,C,H,W) map to a (B,C,H,W) map.  ``film_dim``
    is the width of a prior vector for FiLM modulation (None = no FiLM); a type that
    cannot do FiLM should raise ConfigError when it is not None.  ``block_index``
    (the block's position in its stage) is passed only to builders that accept it.
    A module may define an ``inference_chunk_pixels`` attribute; the U-Net then sets it.
    """

    def deco(builder: AttentionBuilder) -> AttentionBuilder:
        if name in _ATTENTION and _ATTENTION[name] is not builder:
            raise ConfigError(f"attention type {name!r} is already registered")
        _ATTENTION[name] = builder
        return builder

    return deco


def attention_types() -> List[str]:
    """Names accepted by ``build_attention``."""
    return sorted(_ATTENTION)


def build_attention(name: str, dim: int, num_heads: int, bias: bool, **kw) -> nn.Module:
    """Build the attention module registered as ``name`` (ConfigError if unknown)."""
    if name not in _ATTENTION:
        raise ConfigError(f"attention type {name!r} is unknown{did_you_mean(str(name), _ATTENTION)}; "
                          f"known types: {', '.join(attention_types())}")
    builder = _ATTENTION[name]
    if "block_index" in kw and "block_index" not in inspect.signature(builder).parameters:
        kw.pop("block_index")  # the position of the block in its stage (e.g. for alternating window shifts)
    return builder(dim=dim, num_heads=num_heads, bias=bias, **kw)


# --------------------------------------------------------------------------- MDTA
@register_attention("mdta")
class MDTA(nn.Module):
    """Multi-Dconv head Transposed Attention: a (C/h x C/h) channel attention per head.

    q, k are L2-normalised along the pixel axis, logits scaled by a learned per-head
    ``temperature`` (init 1).  With ``film_dim``, the input is first modulated by
    ``ln1(z) * u + ln2(z)`` (HI-Diff bottleneck).

    ``fused=True`` computes the same maths without full-size temporaries:
    the Gram matrix q k^T is formed from the raw q, k and divided by the outer
    product of their norms afterwards; the (C x C) attention is folded into
    ``project_out`` so one token GEMM yields the output; q, k, v are computed one
    after the other.  Without autograd, both passes run over row stripes of at most
    ``inference_chunk_pixels`` pixels (Gram and norms are sums over pixels, so the
    stripes accumulate them exactly); the peak memory then no longer grows with 3C
    full-size maps.  ``fused=False`` is the textbook normalise / matmul / softmax /
    matmul / 1x1-conv sequence.
    """

    inference_chunk_pixels: Optional[int] = None
    takes_norm = True  # forward(x, film, norm=...) normalises stripe by stripe

    def __init__(self, dim: int, num_heads: int, bias: bool = False, film_dim: Optional[int] = None,
                 fused: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"MDTA: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.fused = fused
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.ln1, self.ln2 = film_linears(film_dim, dim)

    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None,
                norm: Optional[nn.Module] = None) -> torch.Tensor:
        """Attention of x (B,C,H,W); with ``norm``, x is un-normalised and LN(x) is taken stripe-wise."""
        prep = branch_input(norm, self.ln1, self.ln2, film, "MDTA")
        if not self.fused:
            return self._plain(x if prep is None else prep(x))
        return self._fused(x, prep)

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads = self.num_heads
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q = F.normalize(q.reshape(b, heads, c // heads, h * w), dim=-1)
        k = F.normalize(k.reshape(b, heads, c // heads, h * w), dim=-1)
        v = v.reshape(b, heads, c // heads, h * w)
        attn = softmax_fp32((q @ k.transpose(-2, -1)) * self.temperature).to(v.dtype)
        return self.project_out((attn @ v).reshape(b, c, h, w))

    def _branch(self, u: torch.Tensor, part: int, top: int = 0, rows: Optional[int] = None) -> torch.Tensor:
        """q (part 0), k (1) or v (2) of the rows [top, top+rows) of u, as (B, pixels, C) tokens."""
        c = u.shape[1]
        y = pointwise_depthwise(self.qkv, self.qkv_dwconv, u, part * c, (part + 1) * c, top, rows)
        return y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, c)

    def _fused(self, x: torch.Tensor, prep: Optional[Prep]) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, d = self.num_heads, c // self.num_heads
        stripes = [(0, h)] if torch.is_grad_enabled() else row_stripes(h, w, self.inference_chunk_pixels)
        whole = None
        if len(stripes) == 1:
            whole = x if prep is None else prep(x)
        grams, sq_q, sq_k = [0.0] * heads, 0.0, 0.0
        for r0, r1 in stripes:  # pass 1: sums over pixels of q_i k_j, q_i^2 and k_j^2
            u, top = (whole, 0) if whole is not None else halo_rows(x, r0, r1, prep)
            q, k = self._branch(u, 0, top, r1 - r0), self._branch(u, 1, top, r1 - r0)
            del u
            if q.dtype == torch.float16:  # raw dot products may exceed the fp16 range
                q, k = q.float(), k.float()
            for i in range(heads):
                grams[i] = grams[i] + per_sample(_gram, q[..., i * d:(i + 1) * d], k[..., i * d:(i + 1) * d])
            sq_q = sq_q + per_sample(_sum_squares, q)
            sq_k = sq_k + per_sample(_sum_squares, k)
            del q, k
        gram = torch.stack(grams, 1).float()  # (B, heads, d, d)
        # F.normalize semantics: divide by max(norm, 1e-12).
        nq = sq_q.sqrt().clamp_min(1e-12).view(b, heads, d, 1)
        nk = sq_k.sqrt().clamp_min(1e-12).view(b, heads, 1, d)
        attn = softmax_fp32(gram / (nq * nk) * self.temperature.float())
        # out = W_p . blockdiag(attn) . v  ->  fold the small matrices first.
        w_p = self.project_out.weight.view(c, heads, d).float()
        mix = torch.einsum("ohi,bhij->bohj", w_p, attn).reshape(b, c, c).transpose(1, 2)
        if whole is not None:
            v = self._branch(whole, 2)
            out = torch.matmul(v, mix.to(v.dtype)).view(b, h, w, c)
        else:  # pass 2: v and the output, stripe by stripe
            out = x.new_empty(b, h, w, c)
            for r0, r1 in stripes:
                u, top = halo_rows(x, r0, r1, prep)
                matmul_into(out[:, r0:r1], self._branch(u, 2, top, r1 - r0), mix)
        out = out.permute(0, 3, 1, 2)
        if self.project_out.bias is not None:
            out = out + self.project_out.bias.to(out.dtype).view(1, c, 1, 1)
        return out


def _gram(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, P, d) x (B, P, d) -> (B, d, d): the sums over pixels of q_i k_j."""
    return q.transpose(1, 2) @ k


def _sum_squares(t: torch.Tensor) -> torch.Tensor:
    """(B, P, C) -> (B, C) float32 sums over pixels of t^2."""
    return t.float().square().sum(1)


# --------------------------------------------------------------------------- GDFN
class GDFN(nn.Module):
    """Gated-Dconv Feed-forward: 1x1 -> depthwise 3x3 -> GELU(x1) * x2 -> 1x1.

    hidden = int(dim * ffn_expansion_factor).  With ``film_dim`` the input is first
    modulated by ``ln1(z) * u + ln2(z)`` (HI-Diff bottleneck).  The two halves x1, x2
    are computed one after the other (same maths, contiguous results, lower peak);
    without autograd the layer runs over row stripes of at most
    ``inference_chunk_pixels`` pixels (exact: one halo row is recomputed per side).
    """

    inference_chunk_pixels: Optional[int] = None
    takes_norm = True  # forward(x, film, norm=...) normalises stripe by stripe

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool = False,
                 film_dim: Optional[int] = None) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        if hidden < 1:
            raise ConfigError(f"GDFN: ffn_expansion_factor={ffn_expansion_factor} gives no hidden channels")
        self.hidden = hidden
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)
        self.ln1, self.ln2 = film_linears(film_dim, dim)

    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None,
                norm: Optional[nn.Module] = None) -> torch.Tensor:
        """FFN of x (B,C,H,W); with ``norm``, x is un-normalised and LN(x) is taken stripe-wise."""
        prep = branch_input(norm, self.ln1, self.ln2, film, "GDFN")
        b, c, h, w = x.shape
        stripes = [(0, h)] if torch.is_grad_enabled() else row_stripes(h, w, self.inference_chunk_pixels)
        if len(stripes) == 1:
            return self.project_out(self._gated(x if prep is None else prep(x)))
        # Inference over stripes: project_out as a token GEMM written straight into the output.
        w_out = self.project_out.weight.view(c, self.hidden).t()
        out = x.new_empty(b, h, w, c)
        for r0, r1 in stripes:
            u, top = halo_rows(x, r0, r1, prep)
            gated = self._gated(u, top, r1 - r0)
            del u
            matmul_into(out[:, r0:r1], gated.permute(0, 2, 3, 1).reshape(b, -1, self.hidden), w_out)
        out = out.permute(0, 3, 1, 2)
        if self.project_out.bias is not None:
            out = out + self.project_out.bias.to(out.dtype).view(1, c, 1, 1)
        return out

    def _gated(self, u: torch.Tensor, top: int = 0, rows: Optional[int] = None) -> torch.Tensor:
        """GELU(x1) * x2 for the rows [top, top+rows) of u."""
        n = self.hidden
        gate = F.gelu(pointwise_depthwise(self.project_in, self.dwconv, u, 0, n, top, rows))
        value = pointwise_depthwise(self.project_in, self.dwconv, u, n, 2 * n, top, rows)
        return gate * value if torch.is_grad_enabled() else gate.mul_(value)


# --------------------------------------------------------------------------- block and resampling
class TransformerBlock(nn.Module):
    """Pre-norm Restormer block: x + attn(LN(x)), then x + ffn(LN(x)); ``film`` feeds both.

    ``forward(x, film, inplace=True)`` lets the block accumulate into x's storage when
    autograd is off (the caller must not need x afterwards); it saves one full-size
    map at the peak.
    """

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool = False,
                 LayerNorm_type: str = "WithBias", film_dim: Optional[int] = None, attn_type: str = "mdta",
                 fused: bool = True, attn_options: Optional[dict] = None) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = build_attention(attn_type, dim, num_heads, bias, film_dim=film_dim, fused=fused,
                                    **(attn_options or {}))
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias, film_dim=film_dim)

    def forward(self, x: torch.Tensor, film: Optional[torch.Tensor] = None, inplace: bool = False) -> torch.Tensor:
        x = residual_add(x, self._branch(self.attn, self.norm1, x, film), inplace)
        return residual_add(x, self._branch(self.ffn, self.norm2, x, film), inplace=True)  # x is ours by now

    @staticmethod
    def _branch(branch: nn.Module, norm: nn.Module, x: torch.Tensor, film: Optional[torch.Tensor]) -> torch.Tensor:
        """branch(LN(x)); a branch with ``takes_norm = True`` applies the norm itself, stripe by stripe."""
        if getattr(branch, "takes_norm", False):
            return branch(x, film, norm=norm)
        return branch(norm(x), film)


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
