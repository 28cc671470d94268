"""HI-Diff's bottleneck FiLM: a prior vector z scales and shifts a branch input, ``u * ln1(z) + ln2(z)``.

A block built with ``film_dim`` owns the two linears as ``ln1`` (scale) and
``ln2`` (shift), the official key names; both broadcast over H and W.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
from einops import rearrange


def film_linears(film_dim: Optional[int], dim: int) -> Tuple[Optional[nn.Linear], Optional[nn.Linear]]:
    """The FiLM pair (``ln1`` -> scale, ``ln2`` -> shift) of a branch, or (None, None) without FiLM."""
    if not film_dim:
        return None, None
    return nn.Linear(film_dim, dim), nn.Linear(film_dim, dim)


def apply_film(u: torch.Tensor, ln1: Optional[nn.Module], ln2: Optional[nn.Module], z: Optional[torch.Tensor],
         owner: str) -> torch.Tensor:
    """``u * ln1(z) + ln2(z)`` for a (B,C,H,W) map u and a (B,film_dim) prior z; u itself without FiLM."""
    if ln1 is None:
        return u
    if z is None:
        raise ValueError(f"{owner} was built with FiLM (film_dim set) but got film=None")
    return u * rearrange(ln1(z), "b c -> b c 1 1") + rearrange(ln2(z), "b c -> b c 1 1")
