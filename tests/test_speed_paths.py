"""The fast paths (fused attention, channels_last, inference stripes) give the plain path's results.

Checked at the level the speed figures are taken: the shipped GoPro configuration
(full widths, random weights), whole inference pipeline and one training step.
"""
from __future__ import annotations

import torch

from conftest import OPTIONS
from hidiff.config import load_options
from hidiff.models import build_model

PLAIN = ["network_g.fused_attention=false", "network_g.channels_last=false", "network_g.inference_chunk_pixels=0"]


def _pair(opt: str, is_train: bool, fast_overrides=()):
    """(fast model, plain model) with identical weights."""
    torch.manual_seed(0)
    fast = build_model(load_options(OPTIONS / opt, list(fast_overrides), is_train=is_train))
    plain = build_model(load_options(OPTIONS / opt, PLAIN, is_train=is_train))
    for name, net in fast.networks().items():
        with torch.no_grad():  # move weights away from init symmetries (temperature 1, LN 1/0)
            for p in net.parameters():
                p.add_(0.01 * torch.randn_like(p))
        plain.networks()[name].load_state_dict(net.state_dict())
    return fast, plain


def test_gopro_pipeline_fast_equals_plain_with_stripes():
    # 400-pixel stripes on a 32x48 input: the layers of the three upper levels run in several stripes
    fast, plain = _pair("test_gopro.yml", False, ["network_g.inference_chunk_pixels=400"])
    g = fast.networks()["g"]
    assert g.channels_last and any(getattr(m, "fused", False) for m in g.modules())
    lq = torch.rand(1, 3, 29, 45)  # padded to 32x48 inside the pipeline
    noise = torch.randn(1, 16, 256)
    with torch.inference_mode():
        out_fast = fast.eval().pipeline().restore(lq, noise=noise)
        out_plain = plain.eval().pipeline().restore(lq, noise=noise)
    assert out_fast.shape == out_plain.shape == lq.shape
    diff = (out_fast - out_plain).abs().max().item()
    assert diff < 1e-4, diff


def test_gopro_stage2_training_step_fast_equals_plain():
    fast, plain = _pair("stage2_gopro.yml", True)
    batch = {"lq": torch.rand(1, 3, 16, 24), "gt": torch.rand(1, 3, 16, 24)}
    losses = []
    for model in (fast, plain):
        torch.manual_seed(1)  # the same x_T noise for both
        loss = model.train()(batch)["total"]
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], atol=1e-5, rtol=1e-5), losses
    for (name, pf), pp in zip(fast.trainable.named_parameters(), plain.trainable.parameters()):
        assert pf.grad is not None and pp.grad is not None, name
        err = (pf.grad - pp.grad).abs().max().item()
        assert err <= 1e-4 * max(1.0, pp.grad.abs().max().item()), (name, err)
