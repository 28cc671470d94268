"""Selective recomputation of a Transformer block's branches (``train.recompute_branches``).

A branch (MDTA or GDFN with its LayerNorm) runs under a non-reentrant activation checkpoint whose policy
keeps the outputs of its matrix products (1x1 convolutions, batched matmuls, fused attention) and recomputes
everything else in backward: the LayerNorm, the depthwise 3x3 convolutions, the GELU gate, the query/key
normalisation and the softmax.  The matrix products, most of a step's time, run once; the cheap maps between
them are not stored.  The same kernels run on the same inputs, so the gradients are the same bit for bit
(tests/test_archs_selective.py); the time and memory it trades are in docs/speed.md.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

_aten = torch.ops.aten
#: operators whose outputs are kept: the matrix products
MATMUL_OPS = frozenset({_aten.mm.default, _aten.bmm.default, _aten.addmm.default, _aten.baddbmm.default,
                        _aten._scaled_dot_product_flash_attention_for_cpu.default,
                        _aten._scaled_dot_product_flash_attention.default,
                        _aten._scaled_dot_product_efficient_attention.default,
                        _aten._scaled_dot_product_cudnn_attention.default})


def keep_matmuls(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """Keep the outputs of dense convolutions (groups 1: the 1x1 projections) and matrix products; recompute
    the rest (depthwise convolutions, normalisations, activations, element-wise maps)."""
    if op is _aten.convolution.default:
        return CheckpointPolicy.MUST_SAVE if args[8] == 1 else CheckpointPolicy.PREFER_RECOMPUTE
    return CheckpointPolicy.MUST_SAVE if op in MATMUL_OPS else CheckpointPolicy.PREFER_RECOMPUTE


_CONTEXTS = functools.partial(create_selective_checkpoint_contexts, keep_matmuls)


def recompute_selectively(fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    """``fn(*args)``, storing for backward only the matrix products' outputs (and ``args``).

    ``fn`` draws no random numbers, so the RNG state need not be saved and restored.
    """
    return checkpoint(fn, *args, use_reentrant=False, context_fn=_CONTEXTS, preserve_rng_state=False)
