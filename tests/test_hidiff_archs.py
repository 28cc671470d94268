"""HI-Diff networks: official state_dict layout, forward shapes, ablations, fused maths, errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hidiff.archs import build_network
from hidiff.archs.attention_registry import attention_types, build_attention, register_attention
from hidiff.archs.fast.gdfn import FastGDFN
from hidiff.archs.fast.him import FastHIM
from hidiff.archs.fast.mdta import FastMDTA
from hidiff.archs.fast.stripes import inference_stripes
from hidiff.archs.gdfn import GDFN
from hidiff.archs.him import HIM
from hidiff.archs.layer_norm import LayerNorm
from hidiff.archs.mdta import MDTA
from hidiff.archs.prior_pyramid import prior_pyramid, token_reducer
from hidiff.errors import ConfigError

REFERENCE = json.loads((Path(__file__).parent / "data" / "hidiff_state_dicts.json").read_text())["configs"]
CASES = [(cfg, net) for cfg in sorted(REFERENCE) for net in sorted(REFERENCE[cfg]["networks"])]
# docs/architecture.md 1.6 (counted by instantiating the official classes)
COUNTS = {"GoPro": {"net_g": 25_298_923, "net_le": 585_688, "net_le_dm": 558_040, "net_d": 2_629_937},
          "RealBlur": {"net_g": 22_281_943, "net_le": 1_533_912, "net_le_dm": 1_506_264, "net_d": 394_752}}

TINY_G = dict(type="Transformer", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
              heads=[1, 1, 1, 1], embed_dim=16)




def tiny_g(**kw) -> nn.Module:
    torch.manual_seed(0)
    return build_network({**TINY_G, **kw}).eval()


def perturb_(net: nn.Module, seed: int = 1) -> nn.Module:
    """Move every parameter away from its default init (LN w=1/b=0, temperature=1) so tests see all of them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net


def prior(batch: int = 2, tokens: int = 16, width: int = 64) -> torch.Tensor:
    return torch.randn(batch, tokens, width, generator=torch.Generator().manual_seed(7))


# --------------------------------------------------------------------------- official layout
@pytest.mark.parametrize("cfg,net", CASES, ids=[f"{c}:{n}" for c, n in CASES])
def test_state_dict_keys_shapes_order_and_count_match_official(cfg, net):
    ref = REFERENCE[cfg]["networks"][net]
    with torch.device("meta"):
        model = build_network({"type": ref["type"], **ref["kwargs"]})
    got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert got == [[k, list(s)] for k, s in ref["state_dict"]]
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == int(ref["num_params"])
    assert n_params == COUNTS["GoPro" if "GoPro" in cfg else "RealBlur"][net]
    assert not list(model.buffers())


def test_official_init_values():
    g = build_network(TINY_G)
    temps = [p for n, p in g.named_parameters() if n.endswith("temperature")]
    assert temps and all(torch.equal(t, torch.ones_like(t)) for t in temps)
    d = build_network({"type": "denoising", "in_channel": 64, "out_channel": 64, "inner_channel": 32})
    assert d.time_mlp.shape == (1,) and d.time_mlp.item() == pytest.approx(1e-3)


def test_alias_and_strict_state_dict_round_trip(tmp_path):
    a = perturb_(tiny_g())
    torch.save(a.state_dict(), tmp_path / "net_g.pth")
    b = build_network({**TINY_G, "type": "HIDiffUNet"}).eval()
    assert type(b) is type(a)
    b.load_state_dict(torch.load(tmp_path / "net_g.pth", weights_only=True), strict=True)
    x, z = torch.rand(2, 3, 32, 48), prior()
    with torch.no_grad():
        assert torch.equal(a(x, z), b(x, z))


# --------------------------------------------------------------------------- forward shapes
def test_tiny_unet_shapes_any_multiple_of_8_and_backward():
    g = tiny_g()
    for h, w in ((32, 48), (40, 56), (8, 8)):
        x = torch.rand(2, 3, h, w)
        with torch.no_grad():
            y = g(x, prior())
        assert y.shape == x.shape and y.is_contiguous() and torch.isfinite(y).all()
    x = torch.rand(1, 3, 16, 24, requires_grad=True)
    g.train()(x, prior(1)).square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in g.parameters())


def test_full_size_gopro_unet_runs_on_16x16():
    ref = REFERENCE["test/GoPro"]["networks"]["net_g"]
    torch.manual_seed(0)
    g = build_network({"type": ref["type"], **ref["kwargs"]}).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y = g(x, prior(1, 16, 256))
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_latent_encoders_and_gt_concat_order():
    torch.manual_seed(0)
    blurry, gt = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    for kind, floor in (("latent_encoder_gelu", -0.17), ("latent_encoder_lrelu", None)):
        le = build_network({"type": kind, "in_chans": 6, "stage": 1, "embed_dim": 16, "block_num": 2}).eval()
        le_dm = build_network({"type": kind, "in_chans": 3, "stage": 2, "embed_dim": 16, "block_num": 2}).eval()
        with torch.no_grad():
            z = le(blurry, gt)
            assert z.shape == (2, 16, 64) and le_dm(blurry).shape == (2, 16, 64)
            # stage 1 encodes concat([gt, blurry]): GT first
            assert torch.equal(z, le(torch.cat([gt, blurry], 1)))
            assert not torch.allclose(z, le(torch.cat([blurry, gt], 1)))
        if floor is not None:
            assert z.min() >= floor  # GELU output: min of x*Phi(x) is about -0.16997
    with pytest.raises(ValueError, match="gt"):
        le(blurry)  # stage 1 without gt


def test_gelu_encoder_output_bound_with_full_size_weights():
    ref = REFERENCE["test/GoPro"]["networks"]["net_le_dm"]
    torch.manual_seed(0)
    le = perturb_(build_network({"type": ref["type"], **ref["kwargs"]}).eval())
    with torch.no_grad():
        z = le(torch.rand(2, 3, 32, 32) * 4 - 2)
    assert z.shape == (2, 16, 256) and z.min() >= -0.17


def test_gopro_denoising_chain_shapes_and_time_conventions():
    ref = REFERENCE["test/GoPro"]["networks"]["net_d"]
    torch.manual_seed(0)
    net_d = build_network({"type": ref["type"], **ref["kwargs"]}).eval()
    c = torch.randn(2, 16, 256)
    x = torch.randn(2, 16, 256)
    with torch.no_grad():
        for i in reversed(range(8)):  # official local chain: t = full(x.shape, i+1)
            eps = net_d(x, c, torch.full(x.shape, i + 1))
            assert eps.shape == (2, 16, 256)
            # (B, N) time is repeated over channels
            assert torch.equal(eps, net_d(x, c, torch.full((2, 16), float(i + 1))))
            x = x - 0.1 * eps
    assert x.shape == (2, 16, 256)


def test_denoising_concat_order_is_x_time_condition():
    """With identity-like weights and no-op mixers, the output is a known function of x (spec: [x, tau, c])."""
    d = build_network({"type": "denoising", "in_channel": 8, "out_channel": 8, "inner_channel": 8,
                       "block_num": 3, "group": 2}).eval()
    with torch.no_grad():
        for p in d.parameters():
            p.zero_()
        d.first_layer[0].weight[:, 0:8] = torch.eye(8)        # pick x
        for mixer in d.blocks:                                   # residual blocks become identities
            for ln in (mixer[0].norm1, mixer[0].norm2):
                ln.weight.fill_(1.0)
        d.final_layer[0].weight.copy_(torch.eye(8))
        x, c = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
        expected = F.gelu(F.gelu(F.leaky_relu(x, 0.2)))
        assert torch.allclose(d(x, c, torch.full((2, 4), 3.0)), expected, atol=1e-6)
        d.first_layer[0].weight.zero_()
        d.first_layer[0].weight[:, 16:24] = torch.eye(8)         # pick c
        assert torch.allclose(d(x, c, 3), F.gelu(F.gelu(F.leaky_relu(c, 0.2))), atol=1e-6)
        d.first_layer[0].weight.zero_()
        d.first_layer[0].weight[:, 8:16] = torch.eye(8)          # pick tau = t * time_mlp
        d.time_mlp.fill_(0.5)
        assert torch.allclose(d(x, c, 3), F.gelu(F.gelu(torch.full_like(x, 1.5))), atol=1e-6)


def test_simple_denoise_concat_order_and_time_scaling():
    """Spec: input [c, t/(10*timesteps), x], no residual, LeakyReLU(0.1) last."""
    d = build_network({"type": "simple_denoise", "n_feats": 2, "n_denoise_res": 2}).eval()  # width 8, 17 inputs
    eye = torch.eye(8)
    with torch.no_grad():
        for p in d.parameters():
            p.zero_()
        for layer in (d.resmlp[2], d.resmlp[3]):
            layer.resmlp[0].weight.copy_(eye)
        x, c = torch.randn(2, 16, 8), torch.randn(2, 16, 8)
        t = torch.full((2, 16), 7)

        def lrelu3(v):  # three Linear+LeakyReLU(0.1) layers, identity weights, no residual
            return F.leaky_relu(F.leaky_relu(F.leaky_relu(v, 0.1), 0.1), 0.1)

        d.resmlp[0].weight[:, 0:8] = eye
        assert torch.allclose(d(x, c, t), lrelu3(c), atol=1e-6)
        d.resmlp[0].weight.zero_()
        d.resmlp[0].weight[:, 9:17] = eye
        assert torch.allclose(d(x, c, t), lrelu3(x), atol=1e-6)
        d.resmlp[0].weight.zero_()
        d.resmlp[0].weight[:, 8] = 1.0
        assert torch.allclose(d(x, c, t), torch.full_like(x, 7 / 50), atol=1e-6)  # default timesteps=5


# --------------------------------------------------------------------------- building blocks vs references
def test_layernorm_variants_match_their_formulas():
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    ln = LayerNorm(6, "WithBias").double()
    bf = LayerNorm(6, "BiasFree").double()
    with torch.no_grad():
        for m in (ln, bf):
            m.body.weight.uniform_(0.5, 1.5)
        ln.body.bias.uniform_(-1, 1)
    mu = x.mean(1, keepdim=True)
    var = x.var(1, keepdim=True, unbiased=False)
    w, b = ln.body.weight.view(1, 6, 1, 1), ln.body.bias.view(1, 6, 1, 1)
    assert torch.allclose(ln(x), (x - mu) / torch.sqrt(var + 1e-5) * w + b)
    assert torch.allclose(bf(x), x / torch.sqrt(var + 1e-5) * bf.body.weight.view(1, 6, 1, 1))
    # bf16 input: statistics in fp32, result cast back
    y = ln.float()(x.float().to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), ln(x.float()), atol=0.05)


def mdta_reference(m: MDTA, x: torch.Tensor) -> torch.Tensor:
    """MDTA in float64 straight from the spec (docs/architecture.md 1.2)."""
    m = m.double()
    x = x.double()
    b, c, h, w = x.shape
    heads = m.num_heads
    q, k, v = F.conv2d(F.conv2d(x, m.qkv.weight), m.qkv_dwconv.weight, padding=1, groups=3 * c).chunk(3, 1)
    q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
    q = q / q.norm(dim=-1, keepdim=True)
    k = k / k.norm(dim=-1, keepdim=True)
    attn = torch.softmax(torch.einsum("bhip,bhjp->bhij", q, k) * m.temperature, dim=-1)
    out = torch.einsum("bhij,bhjp->bhip", attn, v).reshape(b, c, h, w)
    return F.conv2d(out, m.project_out.weight)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_mdta_fast_and_textbook_match_float64_reference(heads):
    torch.manual_seed(heads)
    m = perturb_(FastMDTA(16, heads, bias=False))
    textbook = MDTA(16, heads, bias=False)
    textbook.load_state_dict(m.state_dict())
    x = torch.randn(2, 16, 12, 10)
    ref = mdta_reference(m, x).float()
    m.float()
    for net in (m, textbook):
        for xx in (x, x.contiguous(memory_format=torch.channels_last)):
            with torch.no_grad():
                assert torch.allclose(net(xx), ref, atol=1e-5), (type(net).__name__, heads)
    m.inference_chunk_pixels = 25  # two passes over 3-row stripes
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(m(xc), ref, atol=1e-5)
        assert torch.allclose(m(xc[:1]), ref[:1], atol=1e-5)


def test_him_matches_torch_multihead_attention():
    torch.manual_seed(0)
    dim, heads, pdim = 16, 2, 24
    him = perturb_(FastHIM(dim, heads, pdim, bias=True))
    textbook = HIM(dim, heads, pdim, bias=True)
    textbook.load_state_dict(him.state_dict())
    mha = nn.MultiheadAttention(dim, heads, kdim=pdim, vdim=pdim, batch_first=True)
    with torch.no_grad():
        mha.q_proj_weight.copy_(him.q.weight)
        mha.k_proj_weight.copy_(him.kv.weight[:dim])
        mha.v_proj_weight.copy_(him.kv.weight[dim:])
        mha.in_proj_bias.copy_(torch.cat([him.q.bias, him.kv.bias]))
        mha.out_proj.weight.copy_(him.proj.weight)
        mha.out_proj.bias.copy_(him.proj.bias)
    x, p = torch.randn(2, dim, 6, 5), torch.randn(2, 4, pdim)
    tokens = x.flatten(2).transpose(1, 2)
    xn = F.layer_norm(tokens, (dim,), him.norm1.body.weight, him.norm1.body.bias, 1e-5)
    pn = F.layer_norm(p, (pdim,), him.norm2.body.weight, him.norm2.body.bias, 1e-5)
    with torch.no_grad():
        expected = (tokens + mha(xn, pn, pn, need_weights=False)[0]).transpose(1, 2).reshape(x.shape)
        for net in (him, textbook):
            assert torch.allclose(net(x, p), expected, atol=1e-5), type(net).__name__
        him.inference_chunk_pixels = 7  # pixel chunks (inference only)
        assert torch.allclose(him(x, p), expected, atol=1e-5)
        assert torch.allclose(him(x[:1], p[:1]), expected[:1], atol=1e-5)


def test_gdfn_stripes_equal_whole_image_and_formula():
    torch.manual_seed(0)
    f = perturb_(FastGDFN(8, 2.66, bias=True))
    textbook = GDFN(8, 2.66, bias=True)
    textbook.load_state_dict(f.state_dict())
    x = torch.randn(2, 8, 13, 11).contiguous(memory_format=torch.channels_last)
    h = F.conv2d(F.conv2d(x, f.project_in.weight, f.project_in.bias), f.dwconv.weight, f.dwconv.bias,
                 padding=1, groups=f.dwconv.weight.shape[0])
    x1, x2 = h.chunk(2, 1)
    expected = F.conv2d(F.gelu(x1) * x2, f.project_out.weight, f.project_out.bias)
    with torch.no_grad():
        assert torch.allclose(textbook(x), expected, atol=1e-5)
        for chunk in (None, 11, 30, 1000):  # 1 row, ~3 rows, whole image
            f.inference_chunk_pixels = chunk
            assert torch.allclose(f(x), expected, atol=1e-5), chunk
            assert torch.allclose(f(x[:1]), expected[:1], atol=1e-5), chunk


@pytest.mark.parametrize("fast,textbook,args", [(FastMDTA, MDTA, (16, 2)), (FastGDFN, GDFN, (16, 2.66))],
                         ids=["mdta", "gdfn"])
def test_branches_normalise_and_film_stripe_by_stripe(fast, textbook, args):
    torch.manual_seed(0)
    branch = perturb_(fast(*args, True, 12))
    plain = textbook(*args, True, 12)
    plain.load_state_dict(branch.state_dict())
    norm = perturb_(LayerNorm(16))
    film = torch.randn(2, 12)
    x = torch.randn(2, 16, 9, 7).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = plain(norm(x), film)  # normalised outside, whole map
        for chunk in (None, 14, 1000):
            branch.inference_chunk_pixels = chunk
            assert torch.allclose(branch(x, film, norm=norm), expected, atol=1e-5), chunk
    for module in (branch, plain):
        with pytest.raises(ValueError, match="film=None"):
            module(x)


def test_prior_pyramid_shapes():
    z1 = torch.randn(3, 16, 64)
    z2, z3 = prior_pyramid(z1, token_reducer(16, 4, 64), token_reducer(4, 1, 64))
    assert z2.shape == (3, 4, 64) and z3.shape == (3, 64)


# --------------------------------------------------------------------------- fused vs plain, layouts, chunks
@pytest.mark.parametrize("kw", [dict(), dict(bias=True, LayerNorm_type="BiasFree", heads=[1, 2, 2, 4])],
                         ids=["official", "bias_biasfree_heads"])
def test_fused_plain_layouts_and_stripes_agree(kw):
    base = perturb_(tiny_g(**kw))
    x, z = torch.rand(2, 3, 16, 24), prior()
    with torch.no_grad():
        ref = base(x, z)
        for variant in (dict(fused_attention=False, channels_last=False), dict(fused_attention=False),
                        dict(channels_last=False), dict(inference_chunk_pixels=48),
                        dict(inference_chunk_pixels=0)):
            other = tiny_g(**kw, **variant)
            other.load_state_dict(base.state_dict())
            assert torch.allclose(other(x, z), ref, atol=1e-5), variant


def test_inference_never_modifies_caller_tensors():
    g = perturb_(tiny_g(inference_chunk_pixels=40))
    x, z = torch.rand(1, 3, 16, 24), prior(1)
    x0, z0 = x.clone(), z.clone()
    with torch.no_grad():
        y1 = g(x, z)
        y2 = g(x, z)
    assert torch.equal(x, x0) and torch.equal(z, z0) and torch.equal(y1, y2)
    him = perturb_(FastHIM(8, 2, 64))
    m = torch.randn(1, 8, 4, 6)
    m0 = m.clone()
    with torch.no_grad():
        him(m, z)
        assert torch.equal(m, m0)                     # default: out of place
        out = him(m, z, inplace=True)
    assert out.data_ptr() == m.data_ptr() and not torch.equal(m, m0)


def test_fused_and_plain_gradients_agree():
    a = perturb_(tiny_g(heads=[1, 2, 2, 4])).train()
    b = tiny_g(heads=[1, 2, 2, 4], fused_attention=False).train()
    b.load_state_dict(a.state_dict())
    x, z = torch.rand(1, 3, 16, 24), prior(1)
    a(x, z).square().mean().backward()
    b(x, z).square().mean().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-5, rtol=1e-4), n


def test_autocast_bf16_error_no_worse_than_textbook_path():
    g = perturb_(tiny_g(inference_chunk_pixels=128))
    plain = tiny_g(fused_attention=False, channels_last=False)
    plain.load_state_dict(g.state_dict())
    x, z = torch.rand(1, 3, 24, 32), prior(1)
    with torch.no_grad():
        ref = g(x, z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, y_plain = g(x, z), plain(x, z)
    err, err_plain = (y.float() - ref).abs().mean(), (y_plain.float() - ref).abs().mean()
    assert torch.isfinite(y).all()
    assert err < 1.5 * err_plain and err < 0.05 * ref.abs().mean()



def test_row_stripes_only_without_autograd_on_the_cpu():
    """Stripes bound CPU memory; with autograd, and on any other device (CUDA, where the GPU check measured
    them at about half the speed, or 'meta'), the image is taken whole."""
    x = torch.zeros(1, 4, 10, 8)
    with torch.no_grad():
        assert inference_stripes(x, 24) == [(0, 3), (3, 6), (6, 9), (9, 10)]
        assert inference_stripes(x, None) == [(0, 10)] and inference_stripes(x, 80) == [(0, 10)]
        assert inference_stripes(x.to("meta"), 24) == [(0, 10)]
    with torch.enable_grad():
        assert inference_stripes(x, 24) == [(0, 10)]

def test_fast_mdta_under_fp16_autocast_keeps_the_gram_in_range():
    """The raw Gram q k^T sums products over every pixel: over 128x128 pixels of a bright, smooth input it
    passes float16's maximum (65504).  Found by the first GPU check (NaN losses at 256x256 under fp16 AMP)."""
    torch.manual_seed(0)
    m = FastMDTA(8, 2, bias=False)
    textbook = MDTA(8, 2, bias=False)
    textbook.load_state_dict(m.state_dict())
    x = 12 + torch.rand(1, 8, 128, 128)
    with torch.no_grad():
        ref = textbook(x)
        with torch.autocast("cpu", dtype=torch.float16):
            y_whole, y_grad = m(x), None
        with torch.enable_grad(), torch.autocast("cpu", dtype=torch.float16):
            y_grad = m(x.requires_grad_())
        m.inference_chunk_pixels = 4096  # stripes accumulate the same sums
        with torch.autocast("cpu", dtype=torch.float16):
            y_stripes = m(x)
    for y in (y_whole, y_grad, y_stripes):
        assert torch.isfinite(y).all()
        assert (y.float() - ref).abs().max() < 2e-2 * ref.abs().max()

# --------------------------------------------------------------------------- ablations
def keys(net: nn.Module) -> list:
    return list(net.state_dict())


def test_prior_free_baseline():
    g = tiny_g(use_prior=False)
    assert not any(k.startswith("down_") or ".him." in k or ".ln1." in k for k in keys(g))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert g(x).shape == x.shape
        assert torch.equal(g(x), g(x, prior(1)))  # the prior is ignored


def test_him_levels_and_film_switches():
    g = tiny_g(him_levels=["encoder_level1", "refinement"], film_bottleneck=False)
    ks = keys(g)
    assert {k.split(".")[0] for k in ks if ".him." in k} == {"encoder_level1", "refinement"}
    assert not any(k.startswith("down_") or ".ln1." in k for k in ks)  # z2/z3 unused: no pyramid layers
    g2 = tiny_g(him_levels=["encoder_level2"], film_bottleneck=False)
    assert any(k.startswith("down_1") for k in keys(g2)) and not any(k.startswith("down_2") for k in keys(g2))
    g3 = tiny_g(him_levels=DEFAULT_PLUS_LATENT)  # paper-figure bottleneck HIM on z3
    assert "latent.him.q.weight" in keys(g3)
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        for net in (g, g2, g3):
            assert net(x, prior()).shape == x.shape


DEFAULT_PLUS_LATENT = ["encoder_level1", "encoder_level2", "encoder_level3", "latent", "decoder_level3",
                       "decoder_level2", "decoder_level1", "refinement"]


def test_dual_pixel_variant_and_no_refinement_blocks():
    g = tiny_g(inp_channels=6, dual_pixel_task=True, num_refinement_blocks=0)
    assert "skip_conv.weight" in keys(g) and not any(k.startswith("refinement.blocks") for k in keys(g))
    with torch.no_grad():
        assert g(torch.rand(1, 6, 16, 16), prior(1)).shape == (1, 3, 16, 16)


def test_single_scale_prior_uses_token_mean_for_film():
    g = tiny_g(prior_pyramid=False)
    assert not any(k.startswith("down_") for k in keys(g))
    film_only = perturb_(tiny_g(prior_pyramid=False, him_levels=[]))
    z = prior()
    z_mean = z.mean(1, keepdim=True).expand_as(z)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert g(x, z).shape == x.shape
        assert torch.allclose(film_only(x, z), film_only(x, z_mean), atol=1e-5)
        assert not torch.allclose(film_only(x, z), film_only(x, z.roll(1, dims=-1)), atol=1e-4)
    # without the pyramid any token count works
    g4 = tiny_g(prior_pyramid=False, group=2)
    with torch.no_grad():
        assert g4(x, prior(2, 4, 64)).shape == x.shape


def test_skip_concatenation_order_is_upsampled_then_encoder():
    g = tiny_g()
    seen = {}
    for name in ("encoder_level1", "encoder_level2", "encoder_level3", "up4_3", "up3_2", "up2_1"):
        getattr(g, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.clone()))
    for name in ("reduce_chan_level3", "reduce_chan_level2", "decoder_level1"):  # stages reuse their input
        getattr(g, name).register_forward_pre_hook(lambda m, i, name=name: seen.__setitem__(name, i[0].clone()))
    with torch.no_grad():
        g(torch.rand(1, 3, 16, 24), prior(1))
    for cat, up, enc in (("reduce_chan_level3", "up4_3", "encoder_level3"),
                         ("reduce_chan_level2", "up3_2", "encoder_level2"),
                         ("decoder_level1", "up2_1", "encoder_level1")):
        c = seen[up].shape[1]
        assert torch.equal(seen[cat][:, :c], seen[up]) and torch.equal(seen[cat][:, c:], seen[enc]), cat


@pytest.mark.parametrize("stage", ["encoder_level1", "encoder_level2", "encoder_level3", "latent",
                                   "decoder_level3", "decoder_level2", "decoder_level1", "refinement"])
def test_each_stage_sees_its_pyramid_level(stage):
    """Spec: z1 feeds levels 1 and the refinement, z2 levels 2 and 3, z3 the bottleneck.

    A prior change in the null space of down_1's token mixing leaves z2 and z3 unchanged,
    so only stages fed by z1 may react to it.
    """
    g = perturb_(tiny_g(him_levels=[stage]))  # the FiLM (z3) keeps down_1/down_2 built
    mix = g.down_1[1].weight.detach()                       # (4, 16) over tokens
    null = torch.linalg.svd(mix, full_matrices=True).Vh[4:]  # 12 directions with mix @ v = 0
    z = prior(1)
    dz = (null.T @ torch.randn(12, 64)).unsqueeze(0)        # (1, 16, 64)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        changed = not torch.allclose(g(x, z), g(x, z + dz), atol=1e-5)
    assert changed == (stage in ("encoder_level1", "decoder_level1", "refinement"))


def test_attention_factory_and_per_stage_types():
    assert "mdta" in attention_types()
    name = "test_identity_attention"

    @register_attention(name)
    class IdentityAttention(nn.Module):
        def __init__(self, dim, num_heads, bias, film_dim=None, fused=True, scale=1.0):
            super().__init__()
            self.scale = scale

        def forward(self, x, film=None):
            return x * self.scale

    g = tiny_g(attn_types={"latent": name}, attn_options={name: {"scale": 0.5}}, film_bottleneck=False)
    assert isinstance(g.latent.blocks[0].attn, IdentityAttention) and g.latent.blocks[0].attn.scale == 0.5
    assert isinstance(g.encoder_level1.blocks[0].attn, MDTA)
    with torch.no_grad():
        assert g(torch.rand(1, 3, 16, 16), prior(1)).shape == (1, 3, 16, 16)
    assert isinstance(build_attention("mdta", 8, 2, False), MDTA)
    with pytest.raises(ConfigError, match="mdta"):
        build_attention("mdtaa", 8, 2, False)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw,match", [
    (dict(num_blocks=[1, 1, 1]), "num_blocks"),
    (dict(heads=[1, 1]), "heads"),
    (dict(heads=[1, 3, 1, 1]), "heads"),
    (dict(group=2), "group"),
    (dict(LayerNorm_type="WithBais"), "WithBias"),
    (dict(attn_types="swinn"), "attn_types"),
    (dict(attn_types=["mdta"] * 3), "attn_types"),
    (dict(him_levels=["encoder_levl1"]), "encoder_level1"),
    (dict(dim=7), "dim"),
    (dict(inference_chunk_pixels=-1), "inference_chunk_pixels"),
    (dict(embed_dimm=16), "embed_dim"),
])
def test_bad_unet_kwargs_raise_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        build_network({**TINY_G, **kw})


@pytest.mark.parametrize("block,match", [
    (dict(type="latent_encoder_gelu", in_chans=3, stage=1), "in_chans"),
    (dict(type="latent_encoder_lrelu", in_chans=6, stage=2), "in_chans"),
    (dict(type="latent_encoder_gelu", in_chans=6, stage=3), "stage"),
    (dict(type="denoising", block_num=1), "block_num"),
    (dict(type="simple_denoise", n_feats=0), "n_feats"),
])
def test_bad_encoder_and_denoiser_kwargs_raise_config_error(block, match):
    with pytest.raises(ConfigError, match=match):
        build_network(block)


def test_bad_forward_inputs_have_clear_errors():
    g = tiny_g()
    with pytest.raises(ValueError, match="multiples of 8"):
        g(torch.rand(1, 3, 20, 16), prior(1))
    with pytest.raises(ValueError, match="use_prior=False"):
        g(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(1, 16, 64\)"):
        g(torch.rand(1, 3, 16, 16), prior(1, 16, 256))
    d = build_network({"type": "denoising", "in_channel": 64, "out_channel": 64, "inner_channel": 32})
    with pytest.raises(ValueError, match="condition"):
        d(torch.randn(1, 16, 64), torch.randn(1, 4, 64), 1)


def test_zero_init_output_starts_as_identity_and_still_learns():
    """zero_init_output: the untrained U-Net returns its input; the output conv still gets gradients."""
    net = tiny_g(zero_init_output=True)
    x, z = torch.rand(2, 3, 32, 24), torch.randn(2, 16, 64)
    y = net(x, z)
    assert torch.equal(y, x)
    (y - torch.rand_like(y)).abs().mean().backward()
    assert net.output.weight.grad.abs().sum() > 0
    assert not torch.equal(tiny_g()(x, z), x)  # the official init does not start at the identity
    assert list(net.state_dict()) == list(tiny_g().state_dict())  # keys unchanged: only initial values differ
