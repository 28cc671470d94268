"""hidiff.load / Restorer.deblur on tiny real weights: every source kind, every input kind, seeds, tiling."""
from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import hidiff
from hidiff.cli.deblur import main as deblur_main
from hidiff.engine.validation import image_restorer
from hidiff.errors import ConfigError, DataError
from hidiff.inference.noise import image_seed
from hidiff.inference.tiler import TileOptions, restore_image
from test_deblur_cli import SKIMAGE_DATA, save_release, tiny_state_dicts

from conftest import run_env
from procs import run_checked


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return save_release(tmp_path_factory.mktemp("api") / "HI_Diff_tiny", tiny_state_dicts())


@pytest.fixture(scope="module")
def restorer(weights_dir):
    return hidiff.load(weights_dir, device="cpu")


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.asarray(Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB"))[100:156, 150:222].copy()


def test_import_is_cheap_and_no_argument_says_what_to_pass(tmp_path, monkeypatch):
    code = "import sys, hidiff; assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)"
    run_checked([sys.executable, "-c", code], env=run_env(), timeout=120)
    from hidiff.runners import default_model
    monkeypatch.delenv(default_model.ENV, raising=False)
    monkeypatch.setattr(default_model, "PACKAGED", tmp_path / "empty")   # a copy of hidiff without the weights
    with pytest.raises(ConfigError, match="no default model ships"):
        hidiff.load()
    with pytest.raises(ConfigError, match="expected a path or a run name, got int 5"):
        hidiff.load(5)


def test_every_source_kind_gives_the_same_model(tmp_path, weights_dir, restorer, rgb):
    sds = tiny_state_dicts()
    torch.save({k: {"params": v} for k, v in sds.items()}, tmp_path / "net_g_combined.pth")
    models = tmp_path / "exps" / "run1" / "models"
    models.mkdir(parents=True)
    for name, sd in sds.items():
        torch.save({"params": sd}, models / f"{name}_latest.pth")
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    want = restorer.deblur(x, seed=1)
    for source, kw in ((tmp_path / "net_g_combined.pth", {}), (tmp_path / "exps" / "run1", {}),
                       (models, {}),  # a run's models/ folder was read as a release folder and refused
                       ("run1", {"experiments_root": tmp_path / "exps"})):
        r = hidiff.load(source, device="cpu", **kw)
        assert torch.equal(r.deblur(x, seed=1), want), source
        assert r.source.exists() and str(r.source) in repr(r)
    text = repr(restorer)
    assert str(weights_dir) in text and restorer.weights.sha256["g"][:12] in text and "cpu" in text
    assert restorer.device == torch.device("cpu") and restorer.to("cpu") is restorer
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "missing", tmp_path / "empty", "no_such_run"):
        with pytest.raises(ConfigError, match="expected a folder with released net_<x>.pth"):
            hidiff.load(bad, experiments_root=tmp_path / "exps")


def test_devices_tiles_and_ranges_are_checked_with_clear_messages(weights_dir, restorer, rgb):
    """A misspelt device raised torch's RuntimeError; a numpy integer tile was 'not a size'; a value just over
    1 was reported as 'got [.., 1]', hiding the overshoot."""
    for bad in ("gpu", "auto:0", "mps"):
        with pytest.raises(ConfigError, match=f"device '{bad}': expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
            hidiff.load(weights_dir, device=bad)
        with pytest.raises(ConfigError, match="expected 'auto', 'cpu', 'cuda'"):
            restorer.to(bad)
    assert restorer.to("auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    restorer.to("cpu")
    x = rgb[:40, :40]
    np.testing.assert_array_equal(restorer.deblur(x, tile=np.int64(16)), restorer.deblur(x, tile=16))
    over = rgb[:16, :16].astype(np.float32) / 255
    over[0, 0, 0] = 1.0000001
    with pytest.raises(DataError, match=r"got \[0(\.\d+)?, 1\.00000012\]"):
        restorer.deblur(over)


def test_input_kinds_round_trip_and_seeds_are_bitwise(tmp_path, restorer, rgb):
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    out = restorer.deblur(x, seed=7)
    assert out.shape == x.shape and out.dtype == torch.float32 and 0 <= float(out.min()) <= float(out.max()) <= 1
    assert torch.equal(restorer.deblur(x.clone(), seed=7), out)            # same seed: bitwise the same
    assert not torch.equal(restorer.deblur(x, seed=8), out)                # another seed: another prior noise
    assert (out - x).abs().mean() < 0.1                                    # a real, near-identity restoration
    batch = restorer.deblur(torch.stack([x.flip(-1), x]).double(), seed=7)
    assert batch.dtype == torch.float64 and torch.equal(batch[1].float(), out)  # each image as if alone

    a8 = restorer.deblur(rgb, seed=7)
    assert a8.dtype == np.uint8 and a8.shape == rgb.shape
    np.testing.assert_array_equal(a8, np.rint(out.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    a16 = restorer.deblur(rgb.astype(np.uint16) * 257, seed=7)
    assert a16.dtype == np.uint16 and a16.shape == rgb.shape
    af = restorer.deblur(rgb / 255.0, seed=7)
    assert af.dtype == np.float64 and np.abs(af - out.permute(1, 2, 0).numpy()).max() < 1e-6
    alpha = np.tile(np.arange(rgb.shape[1], dtype=np.uint8), (rgb.shape[0], 1))[:, :, None]
    rgba = restorer.deblur(np.concatenate([rgb, alpha], axis=2), seed=7)
    np.testing.assert_array_equal(rgba, np.concatenate([a8, alpha], axis=2))
    gray = restorer.deblur(rgb[:, :, 1].copy(), seed=7)
    assert gray.shape == rgb.shape[:2] and gray.dtype == np.uint8
    one = restorer.deblur(rgb[:, :, 1:2].copy(), seed=7)      # H x W x 1 comes back as H x W x 1
    assert one.shape == rgb.shape[:2] + (1,) and np.array_equal(one[:, :, 0], gray)

    path = tmp_path / "cat.png"
    Image.fromarray(rgb).save(path)
    from_path = restorer.deblur(str(path), seed=7)
    assert from_path.dtype == np.uint8 and from_path.shape == rgb.shape
    np.testing.assert_array_equal(from_path, restorer.deblur(rgb, seed=7, key="cat"))  # key = the file's stem
    np.testing.assert_array_equal(restorer.deblur(path, seed=7), from_path)

    with pytest.raises(DataError, match=r"values in \[0,1\]"):
        restorer.deblur(x * 255)
    with pytest.raises(DataError, match="float tensor"):
        restorer.deblur((x * 255).to(torch.uint8))
    with pytest.raises(DataError, match="got shape"):
        restorer.deblur(x[:2])
    with pytest.raises(DataError, match="got shape"):
        restorer.deblur(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(DataError, match="expected a tensor, a numpy array or a path"):
        restorer.deblur([1, 2, 3])
    with pytest.raises(DataError, match="holds no pixels"):
        restorer.deblur(np.zeros((0, 16, 3), np.uint8))
    with pytest.raises(DataError, match="holds no pixels"):
        restorer.deblur(torch.zeros(0, 3, 16, 16))
    with pytest.raises(DataError, match="does not exist|cannot read"):
        restorer.deblur(tmp_path / "missing.png")


def test_tiled_deblur_equals_the_command(tmp_path, weights_dir, restorer, rgb):
    src = tmp_path / "in" / "wide.png"
    src.parent.mkdir()
    cv2.imwrite(str(src), (rgb.astype(np.uint16) * 257)[:, :, ::-1])  # 16-bit, larger than the 32-px tile
    assert deblur_main([str(src), "-o", str(tmp_path / "out"), "--weights", str(weights_dir), "--seed", "5",
                        "--tile", "32", "--overlap", "8", "--quiet"]) == 0
    cli = cv2.imread(str(tmp_path / "out" / "wide.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    api = restorer.deblur(src, seed=5, tile=TileOptions(size=32, overlap=8))
    assert api.dtype == np.uint16
    np.testing.assert_array_equal(api, cli)
    whole = restorer.deblur(src, seed=5, tile="whole")
    assert not np.array_equal(whole, api)  # the tiles really were restored separately
    with pytest.raises(ConfigError, match="multiple of 8"):
        restorer.deblur(src, tile=30)



def test_self_ensemble_averages_the_eight_views_and_equals_the_command(tmp_path, weights_dir, restorer, rgb):
    x = torch.from_numpy(rgb[:40, :56]).permute(2, 0, 1).float() / 255  # not square: 90-degree views swap H, W
    views = []
    for k in range(8):  # the unclamped restorations are averaged; the mean is clamped, as any output
        v = torch.flip(x, dims=(-1,)) if k >= 4 else x
        v = torch.rot90(v, k % 4, dims=(-2, -1))
        with torch.inference_mode():
            y = restore_image(restorer.pipeline, v[None], "whole", seed=image_seed("cat", 3))[0]
        y = torch.rot90(y, -(k % 4), dims=(-2, -1))
        views.append(torch.flip(y, dims=(-1,)) if k >= 4 else y)
    expected = torch.stack(views).double().mean(0).float().clamp(0, 1)
    got = restorer.deblur(x, seed=3, key="cat", tile="whole", self_ensemble=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    val = image_restorer(restorer.pipeline, "whole", ensemble=True)(x[None], None, image_seed("cat", 3))
    torch.testing.assert_close(val[0].clamp(0, 1), got, rtol=0, atol=0)  # val.self_ensemble: the same pixels
    plain = restorer.deblur(x, seed=3, key="cat", tile="whole")
    assert float((got - plain).abs().max()) > 1e-3  # the views really differ
    with pytest.raises(ConfigError, match="self_ensemble='yes'"):
        restorer.deblur(x, self_ensemble="yes")

    src = tmp_path / "in" / "cat.png"
    src.parent.mkdir()
    cv2.imwrite(str(src), rgb[:, :, ::-1])
    assert deblur_main([str(src), "-o", str(tmp_path / "out"), "--weights", str(weights_dir), "--seed", "3",
                        "--no-tile", "--self-ensemble", "--quiet"]) == 0
    cli = cv2.imread(str(tmp_path / "out" / "cat.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    np.testing.assert_array_equal(cli, restorer.deblur(src, seed=3, tile="whole", self_ensemble=True))
    assert not np.array_equal(cli, restorer.deblur(src, seed=3, tile="whole"))

@pytest.mark.slow
def test_large_input_is_tiled_automatically_like_the_command(tmp_path, weights_dir, restorer, monkeypatch):
    import hidiff.inference.tiler as tiler

    astronaut = np.asarray(Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB"))
    img = np.concatenate([astronaut, astronaut[:, :16]], axis=1)  # 512 x 528: over the CPU's whole-image limit
    src = tmp_path / "big.png"
    Image.fromarray(img).save(src)
    runs = []           # every tiled restoration: (image shape, tile options, [(tile shape, its top-left), ...])
    real_run_tiles = tiler.run_tiles

    def recording_run_tiles(fn, lq, opts, **kw):
        tiles_seen = []

        def recording_fn(tiles, indices, **fkw):
            tiles_seen.extend((tuple(tiles.shape[-2:]), (i.y, i.x)) for i in indices)
            return fn(tiles, indices, **fkw)

        out = real_run_tiles(recording_fn, lq, opts, **kw)
        runs.append((tuple(lq.shape), opts, sorted(tiles_seen)))
        return out

    monkeypatch.setattr(tiler, "run_tiles", recording_run_tiles)   # restore_image (CLI and API) calls it
    assert deblur_main([str(src), "-o", str(tmp_path / "out"), "--weights", str(weights_dir), "--quiet"]) == 0
    cli = np.asarray(Image.open(tmp_path / "out" / "big.png"))
    np.testing.assert_array_equal(restorer.deblur(src), cli)
    # both really tiled, the same way: the CPU default of 256-px tiles, each restored on its own
    auto = tiler.auto_tile_options(512, 528, "cpu", multiple=restorer.pipeline.pad_multiple)
    assert auto is not None and auto.size == 256
    grid = tiler.TileGrid.build(512, 528, auto)
    tiles = sorted(((256, 256), (y, x)) for y in grid.ys for x in grid.xs)
    assert len(tiles) > 1
    assert runs == [((1, 3, 512, 528), auto, tiles)] * 2, [(shape, opts, len(t)) for shape, opts, t in runs]


def test_training_state_and_its_run_restore_with_the_runs_settings(tmp_path, rgb):
    """A training state written by the CheckpointStore: its recorded T=2, not the default, is used everywhere."""
    from hidiff.config import options_from_text
    from hidiff.engine.checkpoint_store import CheckpointStore
    from test_trust_testing import option_text, save_release as save_suffixed, tiny_state_dicts as suffixed_sds

    sds = suffixed_sds(2)
    release = save_suffixed(tmp_path / "rel", sds)
    run_opts = options_from_text(option_text(tmp_path, tmp_path / "data", release, timesteps=2, name="run_t2"),
                                 is_train=False)
    store = CheckpointStore(tmp_path / "exps" / "run_t2")
    store.save(2, {s: (sd, None) for s, sd in sds.items()}, {"config": run_opts.to_dict()})
    src = tmp_path / "img.png"
    Image.fromarray(rgb).save(src)
    assert deblur_main([str(src), "-o", str(tmp_path / "cli"), "--checkpoint", str(store.state_path(2)),
                        "--quiet"]) == 0
    cli = np.asarray(Image.open(tmp_path / "cli" / "img.png"))
    for source, kw in ((store.state_path(2), {}), (tmp_path / "exps" / "run_t2", {}),
                       ("run_t2", {"experiments_root": tmp_path / "exps"})):
        r = hidiff.load(source, device="cpu", **kw)
        assert "T=2" in repr(r) and r.pipeline.diffusion.timesteps == 2
        np.testing.assert_array_equal(r.deblur(src), cli)
    r8 = hidiff.load(store.state_path(2), device="cpu", timesteps=8)
    assert r8.pipeline.diffusion.timesteps == 8 and not np.array_equal(r8.deblur(src), cli)
