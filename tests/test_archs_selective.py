"""train.recompute_branches: each fast Transformer block's branches keep only their matrix products' outputs
and recompute the rest in backward (hidiff/archs/fast/selective.py).  The gradients are the same bit for bit,
the backward recomputes LayerNorms and depthwise convs but no dense convolution or matrix product, and
inference is untouched."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hidiff.archs.fast.gdfn import set_ffn_recompute
from hidiff.archs.fast.transformer_block import FastTransformerBlock, set_branch_recompute
from test_archs_checkpoint import TINY_G, _loss_and_grads, _net

aten = torch.ops.aten


class OpCounter(TorchDispatchMode):
    """Counts the forward kernels that run: dense and depthwise convolutions, matrix products, LayerNorms."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = {"dense": 0, "depthwise": 0, "matmul": 0, "layer_norm": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is aten.convolution.default:
            self.counts["dense" if args[8] == 1 else "depthwise"] += 1
        elif func in (aten.mm.default, aten.bmm.default, aten.addmm.default):
            self.counts["matmul"] += 1
        elif func is aten.native_layer_norm.default:
            self.counts["layer_norm"] += 1
        return func(*args, **(kwargs or {}))


def _backward_ops(net, x, z) -> dict:
    """The forward kernels that run again during backward (recomputation)."""
    loss = (net(x, z) - x).abs().mean()
    with OpCounter() as seen:
        loss.backward()
    net.zero_grad(set_to_none=True)
    return seen.counts


#: the attention types of hidiff/archs; the window types get small windows so the tiny maps hold several
ATTENTION = {"mdta": {}, "swda": {"attn_types": "swda", "attn_options": {"swda": {"window_size": 4}}},
             "swin": {"attn_types": "swin", "attn_options": {"swin": {"window_size": 4}}}}


@pytest.mark.parametrize("attn", list(ATTENTION))
@pytest.mark.parametrize("levels", [[], [1, 2, 3, 4, "refinement"]], ids=["alone", "inside_checkpointed_levels"])
@pytest.mark.parametrize("ffn", [True, False], ids=["ffn_recompute_on", "ffn_recompute_off"])
def test_selective_recomputation_gives_identical_gradients(levels, ffn, attn):
    net = _net(TINY_G, **ATTENTION[attn])
    net.set_checkpoint_levels(levels)
    set_ffn_recompute(net, ffn)
    x = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(2))
    z = torch.randn(2, 16, net.prior_dim, generator=torch.Generator().manual_seed(3))
    ref_loss, ref_grads = _loss_and_grads(net, x, z)
    assert set_branch_recompute(net, True) == sum(isinstance(m, FastTransformerBlock) for m in net.modules()) > 0
    loss, grads = _loss_and_grads(net, x, z)
    assert torch.equal(loss, ref_loss)
    for key, g in grads.items():
        assert torch.equal(g, ref_grads[key]), key


def test_backward_recomputes_the_cheap_maps_and_never_a_matrix_product():
    net = _net(TINY_G)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    z = torch.randn(1, 16, net.prior_dim, generator=torch.Generator().manual_seed(5))
    set_ffn_recompute(net, False)
    stored = _backward_ops(net, x, z)       # matrix products in backward: their gradients, nothing recomputed
    assert stored["dense"] == stored["depthwise"] == stored["layer_norm"] == 0, stored
    set_branch_recompute(net, True)
    again = _backward_ops(net, x, z)
    blocks = sum(isinstance(m, FastTransformerBlock) for m in net.modules())
    assert again["dense"] == 0 and again["matmul"] == stored["matmul"], again   # the costly part runs once
    assert again["layer_norm"] >= 2 * blocks and again["depthwise"] >= 2 * blocks, again
    net.eval()
    with torch.no_grad(), OpCounter() as inference:                  # inference is untouched
        net(x, z)
    set_branch_recompute(net, False)
    with torch.no_grad(), OpCounter() as before:
        net(x, z)
    assert inference.counts == before.counts


def test_the_official_formulation_never_recomputes():
    net = _net(TINY_G, fused_attention=False)
    x, z = torch.rand(1, 3, 16, 16), torch.randn(1, 16, net.prior_dim)
    assert set_branch_recompute(net, True) == 0      # its blocks are the textbook ones
    assert _backward_ops(net, x, z)["layer_norm"] == 0
