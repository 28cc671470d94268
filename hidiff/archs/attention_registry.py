"""Attention types by name: ``build_attention(name, dim, num_heads, bias, **kw)`` builds one.

``register_attention(name)`` adds a builder, so other architectures (e.g.
Swintormer's window attention) add types without editing this file.  Restormer's
``'mdta'`` is registered here: the CPU-fast :class:`~hidiff.archs.fast.mdta.FastMDTA`
when ``fused=True`` (the default), the textbook :class:`~hidiff.archs.mdta.MDTA` otherwise.
"""
from __future__ import annotations

import inspect
from typing import Callable, Dict, List, Optional

import torch.nn as nn

from hidiff.archs.fast.mdta import FastMDTA
from hidiff.archs.mdta import MDTA
from hidiff.errors import ConfigError
from hidiff.utils.suggest import did_you_mean

AttentionBuilder = Callable[..., nn.Module]
_ATTENTION: Dict[str, AttentionBuilder] = {}


def register_attention(name: str) -> Callable[[AttentionBuilder], AttentionBuilder]:
    """Decorator: make ``builder`` available to ``build_attention(name, ...)``.

    Contract for a builder: it is called as ``builder(dim=, num_heads=, bias=,
    film_dim=, fused=, **options)`` and returns a module whose
    ``forward(x, film=None)`` maps a (B,C,H,W) map to a (B,C,H,W) map.  ``film_dim``
    is the width of a prior vector for FiLM modulation (None = no FiLM); a type that
    cannot do FiLM should raise ConfigError when it is not None.  ``fused`` asks for the
    CPU-fast formulation where a type has one (U-Net option ``fused_attention``).  ``block_index``
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


@register_attention("mdta")
def build_mdta(dim: int, num_heads: int, bias: bool = False, film_dim: Optional[int] = None,
               fused: bool = True) -> MDTA:
    """Restormer's MDTA in its CPU-fast (``fused=True``) or textbook formulation; same parameters."""
    return (FastMDTA if fused else MDTA)(dim, num_heads, bias, film_dim)
