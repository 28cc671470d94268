"""Overlapping-window inference: grids, blending, padding, determinism (docs/architecture.md 3.3)."""
from __future__ import annotations

import logging
import math
import sys

import pytest
import torch
from torch import nn

from conftest import run_env
from hidiff.errors import ConfigError, DataError
from hidiff.inference.noise import tile_seed
from hidiff.inference.tiler import (BLENDS, MODES, WHOLE_IMAGE, TileGrid, TileOptions, auto_tile_options,
                                    axis_profiles, axis_starts, restore_image, run_tiles)
from procs import run_checked


def identity(tiles, indices, **kw):
    return tiles.clone()


def pixelwise(tiles, indices, **kw):
    return 0.5 * tiles ** 2 + 0.1


class SmallUNet(nn.Module):
    """A real conv net with a down/up path, zero padding and a 6->3 option."""

    def __init__(self, cin: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Conv2d(cin, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.out = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x):
        a = torch.relu(self.inp(x))
        b = torch.relu(self.mid(torch.relu(self.down(a))))
        return x[:, :3] + self.out(torch.cat([self.up(b), a], 1))


# ------------------------------------------------------------------ 3. reference grids
@pytest.mark.parametrize("n,t,expected", [
    (1120, 256, [0, 220, 440, 660, 864]),
    (1120, 512, [0, 220, 440, 608]),
    (1680, 512, [0, 220, 440, 660, 880, 1100, 1168]),
    (720, 512, [0, 208]),
    (720, 256, [0, 220, 440, 464]),
    (477, 256, [0, 220, 221]),  # the reference's near-duplicate tile is reproduced on purpose
])
def test_swintormer_mode_reproduces_reference_grid(n, t, expected):
    assert axis_starts(n, t, 220, "swintormer") == expected


def test_reference_tile_counts_and_balanced_grid():
    grid = TileGrid.build(1120, 1680, TileOptions.swintormer_reference(512))
    assert len(grid) == 28
    assert len(TileGrid.build(720, 1280, TileOptions.swintormer_reference(256))) == 24
    assert len(TileGrid.build(720, 1280, TileOptions.swintormer_reference(512))) == 10
    # balanced grid, same tile counts, evenly spread (values from docs/architecture.md 3.3)
    assert axis_starts(1120, 512, 220) == [0, 203, 405, 608]
    assert axis_starts(1680, 512, 220) == [0, 195, 389, 584, 779, 973, 1168]


@pytest.mark.parametrize("n", [256, 257, 300, 477, 512, 513, 700, 1000, 2049])
@pytest.mark.parametrize("step", [1, 100, 220, 256])
def test_balanced_grid_is_minimal_flush_and_even(n, step):
    t = 256
    s = axis_starts(n, t, step)
    assert s[0] == 0 and s[-1] == n - t
    if n > t:
        assert len(s) == math.ceil((n - t) / step) + 1  # fewest tiles with every step <= stride
    steps = [b - a for a, b in zip(s, s[1:])]
    assert all(0 < d <= step for d in steps)
    assert not steps or max(steps) - min(steps) <= 1  # evenly spread: no near-duplicate tile


# ------------------------------------------------------- 1, 2, 4, 8. shapes and unity
SIZES = [(1, 1), (3, 5), (1, 70), (70, 1), (31, 32), (32, 32), (64, 64), (33, 65), (57, 100), (100, 57)]


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("mode", MODES)
def test_partition_of_unity_every_size(blend, mode):
    for h, w in SIZES:
        x = torch.rand(2, 3, h, w)  # B > 1, non-square sizes, sides smaller than the tile
        for batch in (1, 3):
            opts = TileOptions(size=32, overlap=12, blend=blend, mode=mode, batch=batch)
            y = run_tiles(identity, x, opts, batch_on_cpu=True)
            assert y.shape == x.shape and y.dtype == torch.float32
            torch.testing.assert_close(y, x, atol=1e-6, rtol=0)
            z = run_tiles(pixelwise, x, opts, batch_on_cpu=True)
            torch.testing.assert_close(z, 0.5 * x ** 2 + 0.1, atol=1e-6, rtol=0)


@pytest.mark.parametrize("blend", BLENDS)
def test_six_to_three_channel_model(blend):
    """C_in != C_out (dual-pixel): the accumulator takes the model's output channels."""
    x = torch.rand(1, 6, 75, 90)

    def dual(tiles, indices):
        return 0.25 * tiles[:, :3] + 0.75 * tiles[:, 3:] ** 2

    y = run_tiles(dual, x, TileOptions(size=32, stride=20, blend=blend, batch=4), batch_on_cpu=True)
    torch.testing.assert_close(y, 0.25 * x[:, :3] + 0.75 * x[:, 3:] ** 2, atol=1e-6, rtol=0)


@pytest.mark.parametrize("h,w", [(1, 1), (3, 5), (200, 300), (1, 300)])
def test_sides_smaller_than_tile_are_mirror_padded(h, w):
    """Padding far longer than the side works (no negative starts, no reflect-pad error)."""
    seen = []

    def record(tiles, indices):
        seen.append(tiles.clone())
        return tiles

    x = torch.rand(1, 3, h, w)
    y = run_tiles(record, x, TileOptions(size=256, overlap=32))
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)
    tile = seen[0][0]
    assert tile.shape[-2:] == (256, 256)
    # the tile starts with the image itself and continues as a mirror image (period 2(n-1))
    assert torch.equal(tile[:, :h, :min(w, 256)], x[0, :, :, :min(w, 256)])
    if h > 1:
        assert torch.equal(tile[:, h, :min(w, 256)], x[0, :, h - 2, :min(w, 256)])
    else:
        assert torch.equal(tile[:, 1, :min(w, 256)], x[0, :, 0, :min(w, 256)])


def test_exact_fits():
    calls = []

    def count(tiles, indices):
        calls.append(len(indices))
        return tiles

    t, stride = 64, 48
    for n, expected_tiles in [(t, 1), (3 * t, 4), (t + 1, 2), (2 * t - stride, 2)]:
        calls.clear()
        x = torch.rand(1, 3, n, t)
        torch.testing.assert_close(run_tiles(count, x, TileOptions(size=t, stride=stride)), x,
                                   atol=1e-6, rtol=0)
        assert sum(calls) == expected_tiles, n
    assert axis_starts(2 * t - stride, t, stride) == [0, t - stride]


def test_tile_equal_to_image_is_one_direct_forward():
    net = SmallUNet().eval()
    x = torch.rand(1, 3, 96, 96)
    calls = []

    def run(tiles, indices):
        calls.append(tiles.shape[0])
        return net(tiles)

    with torch.no_grad():
        direct = net(x)
    for blend in BLENDS:
        calls.clear()
        y = run_tiles(run, x, TileOptions(size=96, blend=blend))
        assert calls == [1]
        assert torch.equal(y, direct)


# ------------------------------------------------------------------ 5. coverage
@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("mode", MODES)
def test_weights_positive_and_border_pixels_not_downweighted(blend, mode):
    for n, step in [(256, 200), (300, 200), (477, 220), (1000, 224), (513, 1)]:
        starts = axis_starts(n, 256, step, mode)
        profiles = axis_profiles(starts, 256, blend)
        cover = torch.zeros(n)
        for s, p in zip(starts, profiles):
            assert float(p.min()) > 0 and float(p.max()) <= 1
            cover[s:s + 256] += p
        assert float(cover.min()) > 0
        assert float(profiles[0][0]) == 1.0 and float(profiles[-1][-1]) == 1.0


def test_hann_blend_hides_seams_of_a_real_conv():
    """Feathering matters: a zero-padded conv net tiled vs whole image (3.9 table)."""
    net = SmallUNet().eval()
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        whole = net(x)
    err = {b: float((run_tiles(lambda t, i: net(t), x, TileOptions(size=64, stride=40, blend=b)) - whole)
                    .abs().max()) for b in BLENDS}
    assert err["hann"] < err["linear"] < err["mean"]


# -------------------------------------------------------------- 6, 9. determinism
def test_tile_batch_invariance_bitwise_real_network():
    net = SmallUNet().eval()
    x = torch.rand(2, 3, 200, 260)
    opts = dict(size=96, overlap=24, blend="hann")
    n_tiles = 2 * len(TileGrid.build(200, 260, TileOptions(**opts)))
    ref = run_tiles(lambda t, i: net(t), x, TileOptions(**opts, batch=1))
    for batch in (2, 3, 7, n_tiles):
        for fixed in (False, True):
            y = run_tiles(lambda t, i: net(t), x, TileOptions(**opts, batch=batch, fixed_model_batch=fixed),
                          batch_on_cpu=True)
            assert torch.equal(y, ref), (batch, fixed)


def test_fixed_model_batch_pads_last_chunk():
    sizes = []

    def run(tiles, indices):
        sizes.append(tiles.shape[0])
        return tiles

    x = torch.rand(1, 3, 100, 100)  # 3 x 3 tiles of 48 with stride 26
    run_tiles(run, x, TileOptions(size=48, stride=26, batch=4, fixed_model_batch=True), batch_on_cpu=True)
    assert sizes == [4, 4, 4]
    sizes.clear()
    run_tiles(run, x, TileOptions(size=48, stride=26, batch=4), batch_on_cpu=True)
    assert sizes == [4, 4, 1]
    sizes.clear()
    run_tiles(run, x, TileOptions(size=48, stride=26, batch=4))  # a CPU runs one tile per call
    assert sizes == [1] * 9


def test_per_tile_noise_is_independent_of_batch():
    """Each tile's noise comes from (seed, image, position), whatever the chunking."""
    net = SmallUNet().eval()
    proj = torch.linspace(-1, 1, 16 * 3).reshape(16, 3)

    def run(tiles, indices, noise):  # noise (b, 4, 4) -> a per-tile colour shift
        return net(tiles) + 0.01 * (noise.flatten(1) @ proj).view(-1, 3, 1, 1)

    def noise_fn(ti):
        g = torch.Generator().manual_seed(tile_seed(7, ti.b, ti.y, ti.x))
        return torch.randn(4, 4, generator=g)

    x = torch.rand(2, 3, 150, 170)
    ref = run_tiles(run, x, TileOptions(size=96, overlap=32, batch=1), noise_fn=noise_fn)
    for batch in (2, 5, 64):
        assert torch.equal(run_tiles(run, x, TileOptions(size=96, overlap=32, batch=batch), noise_fn=noise_fn,
                                     batch_on_cpu=True),
                           ref)
    other = run_tiles(run, x, TileOptions(size=96, overlap=32), noise_fn=lambda ti: noise_fn(ti) + 1)
    assert not torch.equal(other, ref)  # the noise really reaches the model
    assert tile_seed(7, 0, 0, 96) != tile_seed(7, 0, 96, 0) != tile_seed(8, 0, 96, 0)


def test_global_prior_rows_follow_the_images():
    x = torch.rand(3, 3, 40, 50)
    prior = torch.tensor([[10.0], [20.0], [30.0]])

    def run(tiles, indices, prior):
        assert [int(p) for p in prior[:, 0]] == [10 * (i.b + 1) for i in indices]
        return tiles + prior.view(-1, 1, 1, 1)

    y = run_tiles(run, x, TileOptions(size=32, overlap=8, batch=5), global_prior=prior)
    torch.testing.assert_close(y, x + prior.view(-1, 1, 1, 1), atol=1e-5, rtol=0)


# ------------------------------------------------------- 10. reduced precision, OOM
def test_half_precision_outputs_accumulate_in_float32():
    x = torch.rand(1, 3, 70, 90)
    y = run_tiles(lambda t, i: t.half(), x, TileOptions(size=32, overlap=8))
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    torch.testing.assert_close(y, x, atol=1e-3, rtol=0)


def test_out_of_memory_halves_tile_batch(caplog):
    net = SmallUNet().eval()
    seen = []

    def limited(tiles, indices):
        seen.append(tiles.shape[0])
        if tiles.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated: more than 2 tiles)")
        return net(tiles)

    x = torch.rand(1, 3, 200, 200)
    ref = run_tiles(lambda t, i: net(t), x, TileOptions(size=96, overlap=24, batch=1))
    with caplog.at_level(logging.WARNING, logger="hidiff.inference.tiler"):
        y = run_tiles(limited, x, TileOptions(size=96, overlap=24, batch=8), batch_on_cpu=True)
    assert torch.equal(y, ref)
    assert seen[:3] == [8, 4, 2] and max(seen[3:]) <= 2
    assert "out of memory" in caplog.text

    def always_oom(tiles, indices):
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(torch.OutOfMemoryError):
        run_tiles(always_oom, x, TileOptions(size=96, batch=4), batch_on_cpu=True)


@pytest.mark.parametrize("fixed, expected", [(False, [3, 1, 1, 1]), (True, [8, 4, 2, 2])])
def test_out_of_memory_halves_the_batch_that_failed(caplog, fixed, expected):
    """3 tiles with batch 8: the forward that failed had 3 tiles, so the retry has 1, not min(4, 3) = 3 again
    (the same forward, logged as 'retrying with 4'); with fixed_model_batch it had 8 (3 tiles and 5 copies), which
    the warning now says instead of 3."""
    seen = []

    def limited(tiles, indices):
        seen.append(tiles.shape[0])
        if tiles.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated: more than 2 tiles)")
        return tiles.clone()

    x = torch.rand(1, 3, 16, 40)  # 3 tiles of 16 along the width
    with caplog.at_level(logging.WARNING, logger="hidiff.inference.tiler"):
        y = run_tiles(limited, x, TileOptions(size=16, overlap=4, batch=8, fixed_model_batch=fixed),
                      batch_on_cpu=True)
    assert seen == expected
    assert f"out of memory with {expected[0]} tiles per forward; retrying with {expected[1]}" in caplog.text
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- 11, 13. validation
@pytest.mark.parametrize("kwargs,fragment", [
    (dict(size=64, stride=65), "stride"),
    (dict(size=64, stride=0), "stride"),
    (dict(size=64, overlap=64), "overlap"),
    (dict(size=64, overlap=-1), "overlap"),
    (dict(size=64, overlap=8, stride=56), "not both"),
    (dict(size=0), "size"),
    (dict(size=64, batch=0), "batch"),
    (dict(size=64, blend="han"), "did you mean 'hann'"),
    (dict(size=64, mode="swintromer"), "did you mean 'swintormer'"),
    (dict(size=64, prior="tile"), "prior"),
])
def test_invalid_options_are_rejected(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        TileOptions(**kwargs)


def test_from_dict_yaml_block():
    opts = TileOptions.from_dict({"size": 128, "overlap": 16, "blend": "linear", "batch": 4, "prior": "global"})
    assert opts == TileOptions(size=128, overlap=16, blend="linear", batch=4, prior="global")
    assert opts.describe()["stride"] == 112 and opts.describe()["overlap"] == 16
    assert TileOptions.from_dict(None) is None
    with pytest.raises(ConfigError, match=r"val\.tile\.overlapp: .*did you mean 'overlap'"):
        TileOptions.from_dict({"size": 128, "overlapp": 16})
    with pytest.raises(ConfigError, match=r"val\.tile\.stride"):
        TileOptions.from_dict({"size": 128, "stride": 300})
    with pytest.raises(ConfigError, match=r"myval\.tile"):
        TileOptions.from_dict([128], where="myval.tile")


def test_whole_floats_are_integers_as_in_the_option_schema():
    """`size: 2.56e2` is 256, as integer keys of the option schema read it; 256.5 is refused."""
    opts = TileOptions.from_dict({"size": 2.56e2, "overlap": 3.2e1, "workers": 1.0})
    assert opts == TileOptions(size=256, overlap=32, workers=1)
    assert type(opts.size) is int and type(opts.overlap) is int and type(TileOptions(size=128.0).size) is int
    with pytest.raises(ConfigError, match=r"val\.tile\.size: expected an integer >= 1, got 256\.5"):
        TileOptions.from_dict({"size": 256.5})


MEMORY_PROBE = """
import resource, sys, torch
from hidiff.inference.tiler import TileOptions, run_tiles
x = torch.rand(1, 3, 2000, 3000)
run_tiles(lambda t, i: t * 0.5, torch.rand(1, 3, 300, 300), TileOptions(size=256, batch=4))  # warm-up
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run_tiles(lambda t, i: t * 0.5, x, TileOptions(size=256, overlap=32, batch=4))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


def test_peak_memory_is_one_accumulator_plus_a_chunk():
    """12. A 2000x3000 image (117 tiles): peak growth = the output buffer + one chunk, not all tiles."""
    res = run_checked([sys.executable, "-c", MEMORY_PROBE], env=run_env(), timeout=300)
    growth = int(res.stdout.strip().splitlines()[-1])
    image_bytes = 3 * 2000 * 3000 * 4
    # materialising every tile would add ~1.3 x image_bytes on top of the accumulator
    assert growth < image_bytes + 48 * 2**20, growth / 2**20


def test_tile_must_fit_model_size_divisor_and_input_must_be_4d():
    # e.g. Swintormer needs multiples of 256: refused before any forward runs
    with pytest.raises(ConfigError, match="multiple of 256"):
        run_tiles(identity, torch.rand(1, 3, 300, 300), TileOptions(size=320), multiple=256)
    with pytest.raises(DataError, match="B,C,H,W"):
        run_tiles(identity, torch.rand(3, 64, 64), TileOptions(size=32))


def test_automatic_default_on_cpu():
    assert auto_tile_options(512, 512, "cpu") is None
    opts = auto_tile_options(720, 1280, "cpu")
    assert opts is not None and opts.size == 256 and opts.size - opts.step == 32 and opts.blend == "hann"
    assert auto_tile_options(2000, 3000, "cpu", multiple=48).size % 48 == 0


# ------------------------------------------------- restore_image with HI-Diff
@pytest.fixture(scope="module")
def hidiff_pipeline():
    """A tiny real HI-Diff pipeline (U-Net + latent encoder + denoiser, 2 diffusion steps)."""
    from hidiff.archs import build_network
    from hidiff.inference.official_weights import build_pipeline

    torch.manual_seed(0)
    spec = {"net_g": dict(type="Transformer", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                          heads=[1, 1, 1, 1], embed_dim=16),
            "net_le_dm": dict(type="latent_encoder_gelu", in_chans=3, stage=2, embed_dim=16, block_num=1),
            "net_d": dict(type="denoising", in_channel=64, out_channel=64, inner_channel=32, block_num=3)}
    return build_pipeline({k: build_network(v).state_dict() for k, v in spec.items()}, timesteps=2)[0]


class Spy:
    """Forwards to a real pipeline and records the noise each restore() call receives."""

    def __init__(self, pipeline):
        self._p = pipeline
        self.noises = []

    def __getattr__(self, name):
        return getattr(self._p, name)

    def restore(self, lq, **kw):
        if kw.get("noise") is not None:
            self.noises += list(kw["noise"])
        return self._p.restore(lq, **kw)


def test_restore_image_whole_single_tile_and_auto(hidiff_pipeline):
    p = hidiff_pipeline
    x = torch.rand(1, 3, 64, 64)
    whole = restore_image(p, x, WHOLE_IMAGE, seed=5)
    g = torch.Generator().manual_seed(tile_seed(5, 0, 0, 0))
    with torch.no_grad():
        assert torch.equal(whole, p.restore(x, noise=p.noise(1, generator=g)))
    assert torch.equal(restore_image(p, x, TileOptions(size=64), seed=5), whole)  # one tile == whole image
    assert torch.equal(restore_image(p, x, None, seed=5), whole)  # small image on CPU: automatic = whole
    assert not torch.equal(restore_image(p, x, WHOLE_IMAGE, seed=6), whole)  # the seed reaches the prior


def test_restore_image_per_tile_noise_is_batch_independent(hidiff_pipeline):
    x = torch.rand(1, 3, 100, 90)  # 2 x 2 tiles of 64
    runs = {}
    for batch, on_cpu in ((1, False), (4, False), (3, True), (4, True)):
        spy = Spy(hidiff_pipeline)
        out = restore_image(spy, x, TileOptions(size=64, overlap=16, batch=batch), seed=2, batch_on_cpu=on_cpu)
        runs[batch, on_cpu] = (out, torch.stack(spy.noises))
    ref_out, ref_noise = runs[1, False]
    assert ref_noise.shape == (4, 16, 64) and len({float(n[0, 0]) for n in ref_noise}) == 4
    for (batch, on_cpu), (out, noise) in runs.items():
        assert torch.equal(noise, ref_noise)  # each tile's x_T depends on (seed, position) only
        assert out.shape == x.shape
        if not on_cpu:  # the network runs one tile per call on a CPU: bitwise equal for every batch
            assert torch.equal(out, ref_out), batch
        else:  # batched CPU kernels of this tiny net (inputs below oneDNN's size cut) differ in ulps only
            torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=0)
    # same options, same seed: bitwise reproducible, also with the network always seeing 3 tiles
    opts = TileOptions(size=64, overlap=16, batch=3, fixed_model_batch=True)
    assert torch.equal(restore_image(hidiff_pipeline, x, opts, seed=2),
                       restore_image(hidiff_pipeline, x, opts, seed=2))


def test_restore_image_global_prior(hidiff_pipeline):
    x = torch.rand(2, 3, 70, 100)
    per_tile = restore_image(hidiff_pipeline, x, TileOptions(size=64, overlap=16), seed=1)
    glob = restore_image(hidiff_pipeline, x, TileOptions(size=64, overlap=16, prior="global", batch=2), seed=1)
    assert glob.shape == per_tile.shape == x.shape and torch.isfinite(glob).all()
    assert not torch.equal(glob, per_tile)
    # one prior per image: images do not share priors, and the prior is independent of the tile batch
    glob1 = restore_image(hidiff_pipeline, x, TileOptions(size=64, overlap=16, prior="global", batch=1), seed=1)
    assert torch.equal(glob1, glob)


def test_hidiff_network_is_batch_invariant_when_batched_on_cpu():
    """With tiles really batched, HI-Diff's own arithmetic keeps each tile's output bitwise (sample_wise.py).

    Sizes keep every convolution input above PyTorch's 20480-element cut, below
    which a CPU batch-1 convolution leaves oneDNN (a kernel choice, not ours).
    """
    from hidiff.archs import build_network
    from hidiff.inference.official_weights import build_pipeline

    torch.manual_seed(0)
    spec = {"net_g": dict(type="Transformer", dim=16, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                          heads=[1, 2, 2, 4], embed_dim=32),
            "net_le_dm": dict(type="latent_encoder_gelu", in_chans=3, stage=2, embed_dim=32, block_num=1),
            "net_d": dict(type="denoising", in_channel=128, out_channel=128, inner_channel=64, block_num=3)}
    pipe = build_pipeline({k: build_network(v).state_dict() for k, v in spec.items()}, timesteps=2)[0]
    x = torch.rand(1, 3, 200, 180)  # 2 x 2 tiles of 128
    opts = dict(size=128, overlap=32)
    ref = restore_image(pipe, x, TileOptions(**opts, batch=1), seed=3, batch_on_cpu=True)
    for batch in (2, 4):
        assert torch.equal(restore_image(pipe, x, TileOptions(**opts, batch=batch), seed=3, batch_on_cpu=True),
                           ref), batch


# ------------------------------------------------------ CPU tile workers
def test_cpu_workers_give_the_one_thread_result_bitwise(hidiff_pipeline):
    """Tiles N at a time, one torch thread each: the same bits for every N and every thread count."""
    x = torch.rand(2, 3, 150, 170)  # 2 images x 3 x 4 tiles of 64
    opts = dict(size=64, overlap=16)
    ref = restore_image(hidiff_pipeline, x, TileOptions(**opts, workers=1), seed=3)
    threads = torch.get_num_threads()
    seen = []
    done = []
    for workers in (2, 3, 64):
        spy = Spy(hidiff_pipeline)
        spy.restore = lambda lq, _s=spy, **kw: (seen.append(torch.get_num_threads()), _s._p.restore(lq, **kw))[1]
        out = restore_image(spy, x, TileOptions(**opts, workers=workers), seed=3,
                            progress=lambda d, n: done.append((d, n)))
        assert torch.equal(out, ref), workers
    assert set(seen) == {1} and torch.get_num_threads() == threads  # one thread per worker; the caller keeps its
    assert done[:24] == [(k, 24) for k in range(1, 25)]
    with torch.inference_mode():  # the caller's inference mode reaches the workers
        assert torch.equal(restore_image(hidiff_pipeline, x, TileOptions(**opts, workers=2), seed=3), ref)
    torch.set_num_threads(2)  # (conftest restores it) every tile still runs the one-thread kernels
    for workers in (0, 1):
        assert torch.equal(restore_image(hidiff_pipeline, x, TileOptions(**opts, workers=workers), seed=3), ref)


def test_cpu_worker_error_stops_the_run_and_names_the_cause():
    calls = []

    def failing(tiles, indices):
        calls.append(indices[0])
        if len(calls) == 3:
            raise DataError("tile 3 is broken")
        return tiles

    x = torch.rand(1, 3, 400, 400)  # 4 x 4 tiles of 128
    with pytest.raises(DataError, match="tile 3 is broken"):
        run_tiles(failing, x, TileOptions(size=128, overlap=32, workers=2))
    assert len(calls) <= 3 + 2 * 2  # the tiles already queued may finish; the rest never start


def test_cpu_workers_option_is_checked_and_resolved():
    from hidiff.inference.tiler import cpu_workers
    with pytest.raises(ConfigError, match=r"tile\.workers: expected an integer >= 0, got -1"):
        TileOptions(size=64, workers=-1)
    assert cpu_workers(0, 100) == torch.get_num_threads() and cpu_workers(4, 3) == 3 and cpu_workers(2, 9) == 2
    with torch.autocast("cpu", dtype=torch.bfloat16):   # autocast is per thread: no workers inside it
        assert cpu_workers(2, 9) == 0


def test_restore_image_noise_depends_on_the_index_in_the_batch(hidiff_pipeline):
    """As restore_image's docstring says: image b's noise is seeded with b, so image 1 of a batch is restored
    from other noise than alone; one image per call is what makes a result independent of the batch."""
    x = torch.rand(2, 3, 40, 48)
    both = restore_image(hidiff_pipeline, x, WHOLE_IMAGE, seed=1)
    alone = restore_image(hidiff_pipeline, x[1:2], WHOLE_IMAGE, seed=1)
    assert (both[1:] - alone).abs().max() > 1e-3
    assert torch.equal(alone, restore_image(hidiff_pipeline, x[1:2], WHOLE_IMAGE, seed=1))
