"""Activation checkpointing per U-Net level: same loss and gradients, activations recomputed in backward."""
from __future__ import annotations

import pytest
import torch

from hidiff.archs import build_network
from hidiff.errors import ConfigError

TINY_G = dict(type="Transformer", dim=8, num_blocks=[1, 2, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4],
              embed_dim=16)
TINY_SWIN = dict(type="Swintormer", inp_channels=3, dim=8, num_blocks=[1, 1, 1, 2], num_refinement_blocks=1,
                 heads=[1, 1, 1, 1], window_size=4, prior="hidiff_latent", embed_dim=4)


def _net(spec, **kw):
    torch.manual_seed(0)
    net = build_network({**spec, **kw}).train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net


def _loss_and_grads(net, x, z):
    net.zero_grad(set_to_none=True)
    loss = (net(x, z) - x).abs().mean()
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}


def _calls(net, stage):
    """Counts calls of the first block of ``stage`` (a recomputation in backward counts again)."""
    blocks = getattr(net, stage)
    block = (blocks.blocks if hasattr(blocks, "blocks") else blocks)[0]
    count = [0]
    block.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


@pytest.mark.parametrize("spec,kw,shape", [(TINY_G, {}, (2, 3, 16, 24)),
                                           (TINY_G, {"fused_attention": False}, (2, 3, 16, 24)),
                                           (TINY_SWIN, {}, (2, 3, 32, 32))], ids=["hidiff", "hidiff_plain", "swin"])
def test_checkpointed_levels_give_the_same_loss_and_gradients(spec, kw, shape):
    net = _net(spec, **kw)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(2))
    z = torch.randn(shape[0], 16, net.prior_dim, generator=torch.Generator().manual_seed(3))
    ref_loss, ref_grads = _loss_and_grads(net, x, z)
    net.set_checkpoint_levels([1, 2, 3, 4, "refinement"])
    enc2, dec1 = _calls(net, "encoder_level2"), _calls(net, "decoder_level1")
    loss, grads = _loss_and_grads(net, x, z)
    assert enc2[0] == 2 and dec1[0] == 2  # forward, then the recomputation in backward
    assert abs(loss - ref_loss) <= 1e-6
    assert grads.keys() == ref_grads.keys()
    for key, g in grads.items():
        assert (g - ref_grads[key]).abs().max() <= 1e-6, key
    net.eval()
    with torch.no_grad():  # inference is never checkpointed
        net(x, z)
    assert enc2[0] == 3
    net.set_checkpoint_levels([])
    net.train()
    _loss_and_grads(net, x, z)
    assert enc2[0] == 4


def test_checkpoint_levels_by_name_only_wrap_those_stages():
    net = _net(TINY_G)
    net.set_checkpoint_levels(["encoder_level2"])
    enc2, dec2 = _calls(net, "encoder_level2"), _calls(net, "decoder_level2")
    _loss_and_grads(net, torch.rand(1, 3, 16, 16), torch.randn(1, 16, net.prior_dim))
    assert (enc2[0], dec2[0]) == (2, 1)


@pytest.mark.parametrize("levels,match", [([5], "5"), (["encoder_levl2"], "encoder_level2"), ("latent", "list"),
                                          ([True], "True")])
def test_bad_checkpoint_levels_are_refused(levels, match):
    net = _net(TINY_G)
    with pytest.raises(ConfigError, match=match):
        net.set_checkpoint_levels(levels)
    assert net.checkpoint_levels == frozenset()
