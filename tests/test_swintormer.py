"""Swintormer: published state_dict, SWDA numerics and masks, any size, dual-pixel inputs, HI-Diff prior, training."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage
import torch
import torch.nn.functional as F

from conftest import PY, REPO, run_env
from hidiff.archs import build_network
from hidiff.archs.mdta import MDTA
from hidiff.archs.swin_attention import SWDA
from hidiff.archs.window_ops import PAD_MASK_VALUE, SHIFT_MASK_VALUE, sink_softmax, window_attention_mask
from hidiff.config import load_options
from hidiff.errors import ConfigError
from procs import run_checked

REFERENCE = REPO / "tests" / "data" / "swintormer_state_dict.json"
# window 2: inputs are padded to multiples of 2 * 8 * 2 = 32, which keeps these CPU tests fast
TINY = {"type": "Swintormer", "dim": 8, "num_blocks": [1, 1, 1, 2], "num_refinement_blocks": 2,
        "heads": [1, 1, 2, 2], "window_size": 2}
PRIOR_STAGES = ("encoder_level1", "encoder_level2", "encoder_level3", "decoder_level3", "decoder_level2",
                "decoder_level1", "refinement")


def tiny(**kw) -> torch.nn.Module:
    return build_network({**TINY, **kw}).eval()


# --------------------------------------------------------------------------- published network
def test_default_network_is_the_published_one():
    ref = json.loads(REFERENCE.read_text())
    with torch.device("meta"):
        net = build_network({"type": "Swintormer"})
    assert sum(p.numel() for p in net.parameters()) == ref["meta"]["params"] == 25_177_224
    got = [[k, list(v.shape)] for k, v in net.state_dict().items()]
    assert got == [[k, list(s)] for k, s in ref["state_dict"]]
    assert net.size_multiple == 256


def test_blocks_alternate_unshifted_and_shifted_windows():
    net = tiny(window_size=4)
    assert [blk.attn.shift_size for blk in net.latent] == [0, 2]
    assert [blk.attn.shift_size for blk in net.refinement] == [0, 2]
    assert [blk.attn.shift_size for blk in tiny(window_size=4, shift_size=0).latent] == [0, 0]
    assert all(isinstance(blk.attn, SWDA) and blk.attn.spatial_dim == blk.attn.channel_dim for blk in net.latent)


# --------------------------------------------------------------------------- masks
def _no_wrap(pa: int, pb: int, n: int, shift: int) -> bool:
    """Pixels at rolled positions pa, pb (the map rolled by -shift) are neighbours in the original image
    exactly when their original offset equals their offset in the rolled map."""
    return (pa + shift) % n - (pb + shift) % n == pa - pb


@pytest.mark.parametrize("h,w,ws,shift", [(8, 12, 4, 2), (16, 16, 4, 1), (8, 8, 8, 4), (12, 8, 4, 3)])
def test_shift_mask_matches_an_independent_region_labelling(h, w, ws, shift):
    mask = window_attention_mask(h, w, ws, shift)
    n_cols = w // ws
    expected = torch.empty(h * w // ws ** 2, ws * ws, ws * ws)
    for win in range(expected.shape[0]):
        wy, wx = divmod(win, n_cols)
        coords = [(wy * ws + i // ws, wx * ws + i % ws) for i in range(ws * ws)]
        for a, (ya, xa) in enumerate(coords):
            for b, (yb, xb) in enumerate(coords):
                allowed = _no_wrap(ya, yb, h, shift) and _no_wrap(xa, xb, w, shift)
                expected[win, a, b] = 0.0 if allowed else SHIFT_MASK_VALUE
    assert torch.equal(mask, expected)
    assert window_attention_mask(h, w, ws, 0) is None


def test_padding_mask_removes_padded_keys_also_after_a_shift():
    h = w = 8
    ws, shift, vh, vw = 4, 2, 6, 7
    mask = window_attention_mask(h, w, ws, shift, vh, vw)
    for win in range(4):
        wy, wx = divmod(win, 2)
        for b in range(ws * ws):
            y, x = wy * ws + b // ws, wx * ws + b % ws
            padded = (y + shift) % h >= vh or (x + shift) % w >= vw   # original position of this rolled key
            column = mask[win, :, b] - window_attention_mask(h, w, ws, shift)[win, :, b]
            assert torch.all(column == (PAD_MASK_VALUE if padded else 0.0))
    assert window_attention_mask(h, w, ws, 0, vh, vw).shape == (4, 1, 16)


def test_large_masks_are_built_anew_not_kept_in_the_module_wide_cache(monkeypatch):
    from hidiff.archs import window_ops
    monkeypatch.setattr(window_ops, "CACHED_MASK_MAX_BYTES", 8 * 8 * 4 ** 2 * 4)  # an 8x8 map with 4x4 windows
    window_ops._attention_mask_cached.cache_clear()
    small = window_attention_mask(8, 8, 4, 2)
    assert window_attention_mask(8, 8, 4, 2) is small  # kept
    large = window_attention_mask(16, 8, 4, 2)
    again = window_attention_mask(16, 8, 4, 2)
    assert again is not large and torch.equal(again, large)  # built anew, the same mask
    assert window_ops._attention_mask_cached.cache_info().currsize == 1
    window_ops._attention_mask_cached.cache_clear()


# --------------------------------------------------------------------------- attention numerics
def test_sink_softmax_is_a_softmax_with_a_rowmax_sink():
    z = torch.randn(6, 9, dtype=torch.float64) * 4
    augmented = torch.cat([z, z.max(-1, keepdim=True).values], dim=-1)
    torch.testing.assert_close(sink_softmax(z), torch.softmax(augmented, -1)[:, :-1])
    sums = sink_softmax(z).sum(-1)
    assert torch.all((sums >= 0.5) & (sums < 1.0))
    assert sink_softmax(torch.zeros(1, 4)).sum().item() == pytest.approx(4 / 5)


def _reference_swda(m: SWDA, x: torch.Tensor) -> torch.Tensor:
    """SWDA straight from docs/architecture.md 2, one window and one head at a time.

    Sizes that are not window multiples: zero padding, padded pixels removed from q, k, v and from the keys.
    """
    b, c, h, w = x.shape
    ws, s, heads = m.window_size, m.shift_size, m.num_heads
    cs, cc = m.spatial_dim, m.channel_dim
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    L = ws * ws
    xr = torch.roll(F.pad(x, (0, wp - w, 0, hp - h)), (-s, -s), (2, 3))
    out = torch.zeros(b, c, hp, wp, dtype=x.dtype)
    tau = torch.exp(torch.clamp(m.logit_scale.detach().view(heads), max=math.log(100.0)))
    offsets = torch.tensor([[i // ws - j // ws, i % ws - j % ws] for i in range(L) for j in range(L)],
                           dtype=torch.float32)
    u = offsets / (ws - 1) * 8
    bias = 16 * torch.sigmoid(m.cpb_mlp(torch.sign(u) * torch.log2(1 + u.abs()) / 3)).T.reshape(heads, L, L)

    def weights(z: torch.Tensor) -> torch.Tensor:
        if m.softmax == "standard":
            return torch.softmax(z, -1)
        return torch.softmax(torch.cat([z, z.max(-1, keepdim=True).values], -1), -1)[..., :-1]

    for bi in range(b):
        for y0 in range(0, hp, ws):
            for x0 in range(0, wp, ws):
                win = xr[bi:bi + 1, :, y0:y0 + ws, x0:x0 + ws]
                qkv = F.conv2d(F.conv2d(win, m.qkv.weight), m.qkv_dwconv.weight, padding=1, groups=3 * c)
                tok = qkv[0].reshape(3 * c, L)
                pos = [(y0 + i // ws, x0 + i % ws) for i in range(L)]
                valid = torch.tensor([(py + s) % hp < h and (px + s) % wp < w for py, px in pos])
                tok = tok * valid
                allowed = torch.tensor([[_no_wrap(ya, yb, hp, s) and _no_wrap(xa, xb, wp, s) for yb, xb in pos]
                                        for ya, xa in pos])
                parts = []
                d = cs // heads
                for hd in range(heads):
                    q, k, v = (tok[o + hd * d:o + (hd + 1) * d].T for o in (0, cs, 2 * cs))
                    z = F.cosine_similarity(q[:, None, :], k[None, :, :], dim=-1) * tau[hd] + bias[hd]
                    z = z + torch.where(allowed, 0.0, SHIFT_MASK_VALUE)
                    z = z.masked_fill(~valid[None, :], float("-inf"))
                    parts.append((weights(z) @ v).T)
                d = cc // heads
                for hd in range(heads):
                    q, k, v = (tok[o + hd * d:o + (hd + 1) * d] for o in (3 * cs, 3 * cs + cc, 3 * cs + 2 * cc))
                    z = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T
                    parts.append(weights(z) @ v)
                out[bi, :, y0:y0 + ws, x0:x0 + ws] = torch.cat(parts, 0).reshape(c, ws, ws)
    out = torch.roll(out, (s, s), (2, 3))[..., :h, :w]
    return F.conv2d(out, m.project_out.weight)


@pytest.mark.parametrize("shift,softmax,size", [(0, "sink_rowmax", (8, 12)), (2, "sink_rowmax", (8, 12)),
                                                (2, "standard", (8, 8)), (2, "sink_rowmax", (6, 7)),
                                                (1, "sink_rowmax", (3, 5))])
def test_swda_matches_a_plain_per_window_reference(shift, softmax, size):
    torch.manual_seed(0)
    m = SWDA(8, num_heads=2, window_size=4, shift_size=shift, softmax=softmax)
    with torch.no_grad():
        m.logit_scale.copy_(torch.tensor([math.log(10.0), 5.0]).view(2, 1, 1))  # 5 > ln 100: clamped
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference_swda(m, x), rtol=1e-4, atol=1e-5)


def test_swda_attention_split_variants():
    x = torch.randn(1, 8, 8, 8)
    swin = SWDA(8, 2, window_size=4, attn_split=1.0)
    chan = SWDA(8, 2, window_size=4, attn_split=0.0, channel_attn_temperature=True)
    assert (swin.spatial_dim, swin.channel_dim) == (8, 0) and not hasattr(swin, "temperature")
    assert (chan.spatial_dim, chan.channel_dim) == (0, 8) and not hasattr(chan, "cpb_mlp")
    for m in (swin, chan, SWDA(8, 2, window_size=4, channel_attn_scope="global")):
        assert m(x).shape == x.shape
    with pytest.raises(ConfigError, match="softmax"):
        SWDA(8, 2, softmax="sink")
    with pytest.raises(ConfigError, match="divisible"):
        SWDA(8, 3)


# --------------------------------------------------------------------------- sizes and inputs
def test_any_input_size_gives_an_output_of_that_size():
    torch.manual_seed(0)
    net = tiny()
    for hw in [(1, 1), (5, 3), (37, 50), (32, 32), (40, 17)]:
        with torch.no_grad():
            y = net(torch.rand(1, 6, *hw))
        assert y.shape == (1, 3, *hw) and torch.isfinite(y).all(), hw


def test_input_is_mirror_padded_to_the_size_multiple_and_cropped_back():
    torch.manual_seed(0)
    net = tiny()
    assert net.size_multiple == 32
    x = torch.rand(1, 6, 37, 50)
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (0, 27), (0, 14)), mode="reflect"))
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded)[..., :37, :50])


def test_dual_pixel_view_order_option():
    torch.manual_seed(0)
    rl = tiny()
    lr = tiny(dual_pixel_order="LR")
    lr.load_state_dict(rl.state_dict())
    left, right = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        published = rl(torch.cat([right, left], 1))
        torch.testing.assert_close(lr(torch.cat([left, right], 1)), published)
        assert not torch.allclose(rl(torch.cat([left, right], 1)), published)


@pytest.mark.parametrize("kw,expected", [({}, lambda l, r: r), ({"dual_pixel_order": "LR"}, lambda l, r: r),
                                         ({"residual_from": "views_mean"}, lambda l, r: (l + r) / 2),
                                         ({"residual_from": "none"}, lambda l, r: torch.full_like(l, 0.5))])
def test_global_residual_is_the_configured_view(kw, expected):
    net = tiny(**kw)
    with torch.no_grad():
        net.output[0].weight.zero_()  # the body contributes nothing; only the image residual is left
    left, right = torch.rand(1, 3, 20, 24), torch.rand(1, 3, 20, 24)
    order = kw.get("dual_pixel_order", "RL")
    x = torch.cat([left, right] if order == "LR" else [right, left], 1)
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected(left, right))


def test_three_channel_variant_and_bad_inputs():
    net = tiny(inp_channels=3)
    assert net.patch_embed.proj2.in_channels == 12
    with torch.no_grad():
        assert net(torch.rand(1, 3, 24, 24)).shape == (1, 3, 24, 24)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.rand(1, 6, 24, 24))
    with pytest.raises(ConfigError, match="dual_pixel_order"):
        tiny(inp_channels=3, dual_pixel_order="LR")
    with pytest.raises(ConfigError, match="attn_types"):
        tiny(attn_types="swim")


def test_mdta_and_gdfn_ablations_build_and_run():
    net = tiny(attn_types=["mdta", "swin", "swda", "mdta"], ffn_type="gdfn")
    assert isinstance(net.encoder_level1[0].attn, MDTA) and isinstance(net.latent[0].attn, MDTA)
    assert net.encoder_level2[0].attn.channel_dim == 0
    assert hasattr(net.latent[0].ffn, "dwconv")
    with torch.no_grad():
        assert net(torch.rand(1, 6, 30, 30)).shape == (1, 3, 30, 30)


# --------------------------------------------------------------------------- HI-Diff prior
def test_hidiff_latent_prior_is_used_and_checked():
    torch.manual_seed(0)
    net = tiny(inp_channels=3, prior="hidiff_latent", embed_dim=4)
    assert set(net.hims) == set(PRIOR_STAGES)
    x = torch.rand(2, 3, 32, 32)
    z1, z2 = torch.randn(2, 16, 16), torch.randn(2, 16, 16)
    with torch.no_grad():
        y1, y2 = net(x, z1), net(x, z2)
    assert y1.shape == (2, 3, 32, 32) and not torch.allclose(y1, y2)
    with pytest.raises(ValueError, match=r"\(2, 16, 16\)"):
        net(x)
    with pytest.raises(ValueError, match=r"\(2, 16, 16\)"):
        net(x, torch.randn(2, 16, 8))
    plain = tiny(inp_channels=3)
    with pytest.raises(ValueError, match="prior='none'"):
        plain(x, z1)
    # The layers shared with the published network keep their names.
    result = net.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys and result.missing_keys
    assert all(k.startswith(("hims.", "down_1.", "down_2.")) or ".ln1." in k or ".ln2." in k
               for k in result.missing_keys)


def test_prior_gradients_reach_every_prior_layer():
    torch.manual_seed(0)
    net = tiny(inp_channels=3, prior="hidiff_latent", embed_dim=4).train()
    z = torch.randn(1, 16, 16, requires_grad=True)
    net(torch.rand(1, 3, 32, 32), z).abs().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        if name.startswith(("hims.", "down_")) or ".ln1." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_him_levels_and_film_switches():
    net = tiny(inp_channels=3, prior="hidiff_latent", embed_dim=4, him_levels=["encoder_level1", "refinement"],
               film_bottleneck=False)
    assert set(net.hims) == {"encoder_level1", "refinement"}
    assert not hasattr(net, "down_1") and net.latent[0].attn.ln1 is None   # only z1 is consumed
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(net(x, torch.randn(1, 16, 16)), net(x, torch.randn(1, 16, 16)))
    with pytest.raises(ConfigError, match="him_levels"):
        tiny(prior="hidiff_latent", embed_dim=4, him_levels=["encoder_level9"])


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = tiny(inp_channels=3).train()
    ckpt = tiny(inp_channels=3, grad_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 32, 32)
    for net in (plain, ckpt):
        net(x).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


# --------------------------------------------------------------------------- inside the HI-Diff U-Net
def test_swin_and_swda_attention_inside_the_hidiff_transformer():
    torch.manual_seed(0)
    net = build_network({
        "type": "Transformer", "dim": 8, "num_blocks": [2, 1, 1, 2], "num_refinement_blocks": 1,
        "heads": [1, 1, 2, 2], "embed_dim": 4,
        "attn_types": ["swda", "swin", "mdta", "swda", "mdta", "swin", "swda", "swin"],
        "attn_options": {"swda": {"window_size": 4}, "swin": {"window_size": 4}}})
    enc1 = net.encoder_level1.blocks
    assert isinstance(enc1[0].attn, SWDA) and enc1[0].attn.spatial_dim == 4
    assert [b.attn.shift_size for b in enc1] == [0, 2]           # Swin's alternation inside a stage
    assert net.encoder_level2.blocks[0].attn.channel_dim == 0      # 'swin': window attention on all channels
    assert isinstance(net.encoder_level3.blocks[0].attn, MDTA)
    assert net.latent.blocks[0].attn.ln1 is not None               # the bottleneck FiLM works with SWDA
    x = torch.rand(1, 3, 24, 40)                                   # level 4 is 3x5: smaller than a window
    z = torch.randn(1, 16, 16)
    out = net(x, z)
    assert out.shape == x.shape
    out.mean().backward()
    grads = [p.grad for n, p in net.named_parameters() if "cpb_mlp" in n or "logit_scale" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


# --------------------------------------------------------------------------- option files
SWINTORMER_FILES = ["train_swintormer_dpdd.yml", "test_swintormer_dpdd.yml", "train_swintormer_gopro.yml",
                    "stage1_swintormer_prior_gopro.yml", "stage2_swintormer_prior_gopro.yml"]


@pytest.mark.parametrize("name", SWINTORMER_FILES)
def test_option_files_load_and_build(name):
    opt = load_options(REPO / "options" / name, is_train=not name.startswith("test_"))
    with torch.device("meta"):
        nets = {k: build_network(b, f"network_{k}") for k, b in opt.networks.items()}
    g = nets["g"]
    assert opt.val.window_size == g.size_multiple == 256
    if "dpdd" in name:
        ref = json.loads(REFERENCE.read_text())["state_dict"]
        assert [[k, list(v.shape)] for k, v in g.state_dict().items()] == [[k, list(s)] for k, s in ref]
        for ds in opt.datasets.values():
            assert ds.type == "DualPixelDataset" and ds.params["view_order"] == g.dual_pixel_order
    if "prior" in name:
        assert g.prior == "hidiff_latent" and g.prior_dim == nets["le"].end[0].out_features
        if "d" in nets:
            assert nets["d"].in_channel == g.prior_dim


def test_dpdd_test_file_uses_the_papers_best_window_setting():
    from hidiff.inference.tiler import axis_starts

    opt = load_options(REPO / "options" / "test_swintormer_dpdd.yml", is_train=False)
    tile = opt.val.tile_options()
    assert (tile.size, tile.step, tile.blend, tile.mode) == (512, 220, "mean", "swintormer")
    assert axis_starts(1120, tile.size, tile.step, tile.mode) == [0, 220, 440, 608]       # docs/architecture.md 3.3
    assert axis_starts(1680, tile.size, tile.step, tile.mode) == [0, 220, 440, 660, 880, 1100, 1168]
    assert opt.datasets["test_1"].protocol == "dpdd"


# --------------------------------------------------------------------------- training through the trainer
def _write_photos(folder: Path, size: tuple[int, int], blur: bool) -> None:
    folder.mkdir(parents=True)
    for name in ("astronaut", "chelsea", "coffee"):
        img = getattr(skimage.data, name)()
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        if blur:
            img = cv2.blur(img, (5, 5))
        cv2.imwrite(str(folder / f"{name}.png"), img[..., ::-1])


TINY_YAML = """
name: {name}
model_type: {model_type}
manual_seed: 3
datasets:
  train:
    name: tiny_train
    type: SyntheticBlurDataset
    sharp_root: {root}/sharp
    gt_size: 32
    kernel_size: 7
    length: 4
    batch_size_per_gpu: 2
    num_worker_per_gpu: 0
  val:
    name: tiny_val
    type: PairedImageIRDataset
    dataroot_gt: {root}/val/target
    dataroot_lq: {root}/val/input
network_g:
  type: Swintormer
  inp_channels: 3
  dim: 8
  num_blocks: [1, 1, 1, 2]
  num_refinement_blocks: 1
  heads: [1, 1, 2, 2]
  window_size: 2
  prior: hidiff_latent
  embed_dim: 4
network_le: {{type: latent_encoder_gelu, in_chans: 6, embed_dim: 4, block_num: 1, stage: 1}}
{extra}
path:
  experiments_root: {root}/experiments
train:
  total_iter: 3
  optim_total: {{type: AdamW, lr: 1e-3}}
  use_grad_clip: true
  grad_clip_norm: 0.5
  pixel_opt: {{type: L1Loss}}
{train_extra}
val:
  val_freq: 3
  window_size: 32
  metrics:
    psnr: {{type: psnr_uint8}}
logger:
  print_freq: 1
  save_checkpoint_freq: 3
  use_tb_logger: false
  pbar: false
"""

STAGE2_EXTRA = """
network_le_dm: {type: latent_encoder_gelu, in_chans: 3, embed_dim: 4, block_num: 1, stage: 2}
network_d: {type: denoising, in_channel: 16, out_channel: 16, inner_channel: 16, block_num: 3, group: 4}
diffusion_schedule: {apply_ldm: false, schedule: linear, timesteps: 2, linear_start: 0.1, linear_end: 0.99}
"""


def _train(tmp_path: Path, stage: int) -> Path:
    name = f"tiny_swintormer_s{stage}"
    text = TINY_YAML.format(
        name=name, model_type=f"HI_Diff_S{stage}", root=tmp_path, extra=STAGE2_EXTRA if stage == 2 else "",
        train_extra="  pixel_diff_opt: {type: L1Loss}" if stage == 2 else "")
    if stage == 2:
        text = text.replace("path:\n", "path:\n  stage1: tiny_swintormer_s1\n")
    opt_file = tmp_path / f"{name}.yml"
    opt_file.write_text(text)
    run_checked([PY, REPO / "scripts" / "train.py", "-opt", opt_file], cwd=tmp_path, env=run_env(), timeout=300)
    return tmp_path / "experiments" / name


@pytest.mark.slow
def test_tiny_swintormer_with_prior_trains_stage1_then_stage2(tmp_path):
    _write_photos(tmp_path / "sharp", (48, 48), blur=False)
    _write_photos(tmp_path / "val" / "target", (40, 52), blur=False)
    _write_photos(tmp_path / "val" / "input", (40, 52), blur=True)

    s1 = _train(tmp_path, 1)
    g1 = torch.load(s1 / "models" / "net_g_latest.pth", map_location="cpu", weights_only=True)["params"]
    assert (s1 / "models" / "net_le_latest.pth").is_file()
    s2 = _train(tmp_path, 2)
    for net in ("g", "le_dm", "d"):
        assert (s2 / "models" / f"net_{net}_latest.pth").is_file()
    g2 = torch.load(s2 / "models" / "net_g_latest.pth", map_location="cpu", weights_only=True)["params"]

    net = build_network({**TINY, "inp_channels": 3, "num_blocks": [1, 1, 1, 2], "num_refinement_blocks": 1,
                         "prior": "hidiff_latent", "embed_dim": 4})
    net.load_state_dict(g2, strict=True)
    assert g2.keys() == g1.keys()
    # stage 2 started from stage 1's net_g (HI-Diff) and then moved it
    changed = [k for k in g1 if not torch.equal(g1[k], g2[k])]
    assert changed and any(k.startswith("hims.") for k in changed)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 40, 52), torch.randn(1, 16, 16)).shape == (1, 3, 40, 52)


def test_the_pipeline_takes_the_networks_default_input_channels():
    """A Swintormer block without inp_channels is the dual-pixel network (6 channels); its pipeline took 3."""
    import yaml

    from hidiff.config import options_from_text
    from hidiff.models import build_model

    opts = {"name": "dp", "model_type": "PlainRestoration",
            "network_g": {"type": "Swintormer", "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                          "heads": [1, 1, 1, 1], "window_size": 4},
            "datasets": {"test_1": {"name": "x", "type": "PairedImageIRDataset", "dataroot_lq": ".",
                                    "dataroot_gt": "."}}}
    model = build_model(options_from_text(yaml.safe_dump(opts), is_train=False))
    assert model.trainable["g"].inp_channels == 6 and model.pipeline().in_channels == 6
