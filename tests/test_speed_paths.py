"""The fast paths (fused attention, channels_last, inference stripes) give the plain path's results.

Checked at the level the speed figures are taken: the shipped GoPro configuration
(full widths, random weights), whole inference pipeline and one training step;
and block by block, each CPU-fast class against its textbook class.
"""
from __future__ import annotations

import pytest
import torch

from conftest import OPTIONS
from hidiff.archs.basic_layer import BasicLayer
from hidiff.archs.fast.basic_layer import FastBasicLayer
from hidiff.archs.fast.gdfn import FastGDFN
from hidiff.archs.fast.him import FastHIM
from hidiff.archs.fast.mdta import FastMDTA
from hidiff.archs.fast.transformer_block import FastTransformerBlock
from hidiff.archs.gdfn import GDFN
from hidiff.archs.him import HIM
from hidiff.archs.mdta import MDTA
from hidiff.archs.transformer_block import TransformerBlock
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


# --------------------------------------------------------------------------- block by block
# Each CPU-fast class (hidiff/archs/fast/) against the textbook class it subclasses, with the
# same weights: outputs, input gradients and parameter gradients agree within 1e-4.
DIM, HEADS, PRIOR_DIM, FILM_DIM = 16, 2, 12, 6


def _mdta(fast, bias=False, film_dim=None, heads=HEADS):
    return (FastMDTA if fast else MDTA)(DIM, heads, bias, film_dim)


def _gdfn(fast, bias=False, film_dim=None, factor=2.66):
    return (FastGDFN if fast else GDFN)(DIM, factor, bias, film_dim)


def _block(fast, bias=False, film_dim=None, ln="WithBias"):
    block = FastTransformerBlock if fast else TransformerBlock
    return block(DIM, _mdta(fast, bias, film_dim), _gdfn(fast, bias, film_dim), ln)


def _stage(fast, **kw):
    return (FastBasicLayer if fast else BasicLayer)(DIM, HEADS, 2, 2.66, False, "WithBias", fused=fast, **kw)


# name: (builder(fast) -> module, which of (x, prior, film) the forward takes)
BLOCKS = {
    "mdta": (lambda f: _mdta(f), "x"),
    "mdta_bias_film_4heads": (lambda f: _mdta(f, True, FILM_DIM, heads=4), "x,film"),
    "gdfn": (lambda f: _gdfn(f), "x"),
    "gdfn_bias_film": (lambda f: _gdfn(f, True, FILM_DIM, factor=2.0), "x,film"),
    "him": (lambda f: (FastHIM if f else HIM)(DIM, HEADS, PRIOR_DIM), "x,prior"),
    "him_bias": (lambda f: (FastHIM if f else HIM)(DIM, HEADS, PRIOR_DIM, bias=True), "x,prior"),
    "block": (lambda f: _block(f), "x"),
    "block_bias_film_biasfree": (lambda f: _block(f, True, FILM_DIM, "BiasFree"), "x,film"),
    "stage_him": (lambda f: _stage(f, prior_dim=PRIOR_DIM), "x,prior"),
    "stage_film": (lambda f: _stage(f, film_dim=FILM_DIM), "x,none,film"),
}


def _block_pair(name):
    build, _ = BLOCKS[name]
    torch.manual_seed(0)
    fast = build(True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from init symmetries (temperature 1, LN 1/0)
        for p in fast.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    textbook = build(False)
    assert type(textbook) in type(fast).__mro__[1:] and list(textbook.state_dict()) == list(fast.state_dict())
    textbook.load_state_dict(fast.state_dict())
    return fast, textbook


def _block_inputs(name, requires_grad=False):
    g = torch.Generator().manual_seed(2)
    full = {"x": torch.randn(2, DIM, 9, 7, generator=g), "prior": torch.randn(2, 4, PRIOR_DIM, generator=g),
            "film": torch.randn(2, FILM_DIM, generator=g), "none": None}
    args = [full[k] for k in BLOCKS[name][1].split(",")]
    return [a.requires_grad_(requires_grad) if a is not None else None for a in args]


def _close(a, b, what):
    err = (a - b).abs().max().item()
    assert err <= 1e-4 * max(1.0, b.abs().max().item()), (what, err)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_fast_block_forward_and_gradients_equal_textbook(name):
    fast, textbook = _block_pair(name)
    upstream = torch.randn(2, DIM, 9, 7, generator=torch.Generator().manual_seed(3))
    results = []
    for module, channels_last in ((fast, True), (textbook, False)):
        args = _block_inputs(name, requires_grad=True)
        x = args[0].contiguous(memory_format=torch.channels_last) if channels_last else args[0]
        out = module.train()(x, *args[1:])
        (out * upstream).sum().backward()
        results.append((out.detach(), [a.grad for a in args if a is not None], dict(module.named_parameters())))
    (out_f, in_grads_f, params_f), (out_t, in_grads_t, params_t) = results
    _close(out_f, out_t, "output")
    for i, (gf, gt) in enumerate(zip(in_grads_f, in_grads_t)):
        _close(gf, gt, f"input {i} gradient")
    assert params_f.keys() == params_t.keys()
    for key, p in params_t.items():
        assert p.grad is not None and params_f[key].grad is not None, key
        _close(params_f[key].grad, p.grad, key)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_fast_block_inference_in_stripes_and_in_place_equals_textbook(name):
    fast, textbook = _block_pair(name)
    fast.eval(), textbook.eval()
    for m in fast.modules():
        if hasattr(m, "inference_chunk_pixels"):
            m.inference_chunk_pixels = 20  # 63-pixel maps: 2-row stripes, 20-pixel HIM chunks
    args = _block_inputs(name)
    x = args[0].contiguous(memory_format=torch.channels_last)
    x0 = x.clone()
    with torch.no_grad():
        expected = textbook(*args)
        _close(fast(x, *args[1:]), expected, "stripes")
        assert torch.equal(x, x0)  # the default call leaves its input alone
        consume = {FastBasicLayer: {"consume_input": True}, FastHIM: {"inplace": True},
                   FastTransformerBlock: {"inplace": True}}.get(type(fast))
        if consume is not None:
            out = fast(x, *args[1:], **consume)
            assert out.data_ptr() == x.data_ptr()
            _close(out, expected, "in place")


def test_fused_switch_runs_the_textbook_forward():
    """``fused = False`` on a fast module (the profiler's reference formulation) gives the textbook result."""
    for name in ("mdta_bias_film_4heads", "gdfn_bias_film", "him_bias", "block_bias_film_biasfree"):
        fast, textbook = _block_pair(name)
        args = _block_inputs(name)
        for m in fast.modules():
            if isinstance(getattr(m, "fused", None), bool):
                m.fused = False
        with torch.no_grad():  # training mode: the sample-wise linears run batched, as nn.Linear
            assert torch.equal(fast.train()(*args), textbook.train()(*args)), name
