"""hidiff-deblur end to end, and recognising networks from their weights alone."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage
import torch
from PIL import Image, ImageOps

from conftest import run_env
from hidiff.archs import build_network
from hidiff.cli.deblur import main
from hidiff.diffusion.latent_ddpm import build_diffusion
from hidiff.errors import CheckpointError
from hidiff.inference.official_weights import build_pipeline, load_checkpoint, load_official, recognise
from hidiff.inference.pipeline import RestorationPipeline
from procs import run_checked

REPO = Path(__file__).resolve().parents[1]
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"

TINY = {
    "net_g": dict(type="Transformer", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                  heads=[1, 1, 1, 1], embed_dim=16),
    "net_le_dm": dict(type="latent_encoder_gelu", in_chans=3, stage=2, embed_dim=16, block_num=1),
    "net_d": dict(type="denoising", in_channel=64, out_channel=64, inner_channel=32, block_num=3),
}


def tiny_state_dicts(spec=TINY, seed: int = 0) -> dict:
    """Tiny real networks; net_g's last conv is scaled down so outputs stay close to the input
    (the global residual), which lets the tests check geometry and colour of real outputs."""
    torch.manual_seed(seed)
    sds = {k: build_network(v).state_dict() for k, v in spec.items()}
    if "output.weight" in sds["net_g"]:
        sds["net_g"]["output.weight"] = sds["net_g"]["output.weight"] * 0.05
    return sds


def save_release(folder: Path, sds: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, sd in sds.items():
        torch.save({"params": sd}, folder / f"{name}.pth")
    return folder


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.open(SKIMAGE_DATA / "chelsea.png").convert("RGB"))[100:172, 150:246].copy()


@pytest.fixture()
def inputs(tmp_path, photo) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    cv2.imwrite(str(d / "deep.png"), (photo.astype(np.uint16) * 257)[:, :, ::-1])
    Image.fromarray(photo).convert("L").save(d / "gray.jpg", quality=95)
    alpha = np.tile(np.arange(photo.shape[1], dtype=np.uint8) * 2, (photo.shape[0], 1))
    Image.fromarray(np.dstack([photo, alpha]), "RGBA").save(d / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    Image.fromarray(photo).save(d / "rotated.jpg", exif=exif, quality=95)
    data = (d / "deep.png").read_bytes()
    (d / "broken.png").write_bytes(data[: len(data) // 2])
    return d


# ----------------------------------------------------------- the command line
def test_cli_subprocess_folder_of_mixed_photos(tmp_path, inputs, photo):
    weights = save_release(tmp_path / "HI_Diff_tiny", tiny_state_dicts())
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "scripts" / "deblur.py"), str(inputs), "-o", str(out),
           "--weights", str(weights), "--seed", "3"]
    res = run_checked(cmd, env=run_env(), cwd=tmp_path, timeout=300, returncode=1)  # one file failed
    assert "broken.png" in res.stderr and "truncated" in res.stderr
    assert "summary: 4 deblurred, 0 skipped, 1 failed of 5" in res.stderr
    assert sorted(os.listdir(out)) == ["deep.png", "gray.jpg", "rgba.png", "rotated.jpg"]

    deep = cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == photo.shape
    assert np.abs(deep[:, :, ::-1] / 65535.0 - photo / 255.0).mean() < 0.05  # a restoration of this photo
    assert len(np.unique(deep)) > 256  # really 16-bit values, not 8-bit ones scaled up

    gray = Image.open(out / "gray.jpg")
    assert gray.mode == "L" and gray.size == (photo.shape[1], photo.shape[0])

    rgba = Image.open(out / "rgba.png")
    assert rgba.mode == "RGBA"
    src_alpha = np.asarray(Image.open(inputs / "rgba.png"))[..., 3]
    np.testing.assert_array_equal(np.asarray(rgba)[..., 3], src_alpha)

    rotated = np.asarray(Image.open(out / "rotated.jpg"))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(inputs / "rotated.jpg")))
    assert rotated.shape == upright.shape == (photo.shape[1], photo.shape[0], 3)
    assert Image.open(out / "rotated.jpg").getexif().get(0x0112, 1) == 1
    err_upright = np.abs(rotated.astype(float) - upright).mean()
    err_flipped = np.abs(rotated.astype(float) - upright[::-1, ::-1]).mean()
    assert err_upright < 12 < err_flipped

    # second run: nothing is overwritten, every existing output is skipped
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    res2 = run_checked(cmd, env=run_env(), cwd=tmp_path, timeout=300, returncode=1)
    assert "summary: 0 deblurred, 4 skipped, 1 failed of 5" in res2.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_checkpoint_file_and_release_folder_give_identical_results(tmp_path, inputs, capsys):
    sds = tiny_state_dicts()
    save_release(tmp_path / "release", sds)
    torch.save({"net_g": {"params": sds["net_g"]}, "net_le_dm": {"params": sds["net_le_dm"]},
                "net_d": sds["net_d"]}, tmp_path / "combined.pth")
    img = str(inputs / "deep.png")
    assert main([img, "-o", str(tmp_path / "a"), "--weights", str(tmp_path / "release"), "--quiet"]) == 0
    assert main([img, "-o", str(tmp_path / "b"), "--checkpoint", str(tmp_path / "combined.pth"), "--quiet"]) == 0
    a = cv2.imread(str(tmp_path / "a" / "deep.png"), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(tmp_path / "b" / "deep.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(a, b)
    # tiled with the automatic-size path forced on, and the global prior: still one image out
    assert main([img, "-o", str(tmp_path / "c"), "--weights", str(tmp_path / "release"), "--tile", "48",
                 "--overlap", "8", "--tile-batch", "3", "--prior", "global", "--ext", "tif", "--quiet"]) == 0
    c = cv2.imread(str(tmp_path / "c" / "deep.tif"), cv2.IMREAD_UNCHANGED)
    assert c.dtype == np.uint16 and c.shape == a.shape
    assert np.abs(c.astype(float) - a).mean() / 65535 < 0.05
    # tiles restored one at a time or three at once (one thread each): the same bits
    for workers in ("1", "3"):
        assert main([img, "-o", str(tmp_path / f"w{workers}"), "--weights", str(tmp_path / "release"), "--tile",
                     "48", "--overlap", "8", "--tile-workers", workers, "--quiet"]) == 0
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "w1" / "deep.png"), cv2.IMREAD_UNCHANGED),
                                  cv2.imread(str(tmp_path / "w3" / "deep.png"), cv2.IMREAD_UNCHANGED))


def test_refusals_and_usage_errors(tmp_path, inputs, capsys):
    release = save_release(tmp_path / "release", tiny_state_dicts())
    img = str(inputs / "rgba.png")
    # output folder == input folder would overwrite the inputs
    assert main([str(inputs), "-o", str(inputs), "--weights", str(release), "--quiet"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    # a file that is not a checkpoint is named in the error
    (tmp_path / "junk.pth").write_bytes(b"definitely not a torch file")
    assert main([img, "-o", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "junk.pth"), "--quiet"]) == 2
    assert "junk.pth" in capsys.readouterr().err
    # a checkpoint that would run code when unpickled is refused (weights_only loading)
    torch.save({"net_g": {"params": {"w": torch.zeros(1)}}, "evil": Path("x")}, tmp_path / "evil.pth")
    assert main([img, "-o", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "evil.pth"), "--quiet"]) == 2
    assert "evil.pth" in capsys.readouterr().err
    # incompatible flags and invalid tiles
    assert main([img, "-o", str(tmp_path / "o"), "--weights", str(release), "--no-tile", "--tile", "64"]) == 2
    assert main([img, "-o", str(tmp_path / "o"), "--weights", str(release), "--no-tile", "--tile-workers", "2"]) == 2
    assert "--no-tile cannot be combined with" in capsys.readouterr().err
    assert main([img, "-o", str(tmp_path / "o"), "--weights", str(release), "--tile", "60", "--quiet"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert main([img, "-o", str(tmp_path / "o"), "--weights", str(release), "--tile", "64",
                 "--overlap", "64"]) == 2
    # a missing input is bad usage, named before anything runs (tests/test_cli_deblur_inputs.py)
    assert main([img, str(tmp_path / "nope.png"), "-o", str(tmp_path / "o"), "--weights", str(release),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nope.png" in err and "summary:" not in err and not tmp_path.joinpath("o").exists()


def test_output_problems_are_reported_per_file_or_as_usage(tmp_path, inputs, capsys, monkeypatch):
    release = save_release(tmp_path / "release", tiny_state_dicts())
    gray, rgba = str(inputs / "gray.jpg"), str(inputs / "rgba.png")
    # an unknown format is bad usage, found before any model is loaded
    assert main([gray, "-o", str(tmp_path / "o"), "--weights", str(tmp_path / "none"), "--ext", "xyz"]) == 2
    assert "--ext xyz: expected one of png" in capsys.readouterr().err
    # an output folder that cannot be created
    (tmp_path / "afile").write_text("x")
    assert main([gray, "-o", str(tmp_path / "afile" / "o"), "--weights", str(release), "--quiet"]) == 2
    assert "cannot create the folder" in capsys.readouterr().err
    # a write that fails (a folder in the way) is that file's failure; the others are written
    out = tmp_path / "o2"
    (out / "gray.jpg").mkdir(parents=True)
    assert main([gray, rgba, "-o", str(out), "--weights", str(release), "--quiet", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert f"cannot write '{out / 'gray.jpg'}'" in err and "1 deblurred, 0 skipped, 1 failed of 2" in err
    assert (out / "rgba.png").is_file() and not list(out.glob(".*.tmp"))
    # one file named twice (relative and absolute) is deblurred once
    monkeypatch.chdir(inputs)
    assert main(["gray.jpg", gray, "-o", str(tmp_path / "o3"), "--weights", str(release), "--quiet"]) == 0
    assert "1 deblurred, 0 skipped, 0 failed of 1" in capsys.readouterr().err
    # writing next to the inputs with another extension works; a second run that would deblur the first
    # run's output into itself names the file at risk; with other work to do, only those files fail
    assert main([gray, "-o", str(inputs), "--ext", "png", "--weights", str(release), "--quiet"]) == 0
    capsys.readouterr()
    assert main([str(inputs / "gray.*"), "-o", str(inputs), "--ext", "png", "--weights", str(release),
                 "--quiet"]) == 2
    at_risk = f"would overwrite the input file '{inputs / 'gray.png'}'"
    assert at_risk in capsys.readouterr().err
    assert main([str(inputs / "gray.*"), "-o", str(inputs), "--ext", "png", "--weights", str(release),
                 "--quiet", "--overwrite"]) == 2
    capsys.readouterr()
    (inputs / "other").mkdir()
    shutil.copy(inputs / "rgba.png", inputs / "other" / "new.png")
    assert main([str(inputs / "gray.*"), str(inputs / "other"), "-o", str(inputs), "--ext", "png",
                 "--weights", str(release), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert at_risk in err and "1 deblurred, 0 skipped, 2 failed of 3" in err and (inputs / "new.png").is_file()


def test_weights_saved_from_ddp_or_compile_are_recognised(tmp_path, inputs):
    """'module.' / '_orig_mod.' prefixes (DDP, torch.compile) are stripped before the architecture is read."""
    sds = {name: {f"module._orig_mod.{k}": v for k, v in sd.items()} for name, sd in tiny_state_dicts().items()}
    release = save_release(tmp_path / "prefixed", sds)
    assert main([str(inputs / "gray.jpg"), "-o", str(tmp_path / "o"), "--weights", str(release), "--quiet"]) == 0
    pipeline, _ = load_official(release)
    plain, _ = build_pipeline(tiny_state_dicts())
    assert torch.equal(pipeline.net_g.output.weight, plain.net_g.output.weight)


def test_experiment_folder(tmp_path, inputs):
    models = tmp_path / "exps" / "run1" / "models"
    models.mkdir(parents=True)
    for name, sd in tiny_state_dicts().items():
        torch.save({"params": sd}, models / f"{name}_latest.pth")
    assert main([str(inputs / "gray.jpg"), "-o", str(tmp_path / "o"), "--experiment", "run1",
                 "--experiments-root", str(tmp_path / "exps"), "--quiet"]) == 0
    assert Image.open(tmp_path / "o" / "gray.jpg").mode == "L"


# ------------------------------------------------------- weight recognition
# The shipped configurations as documented in docs/architecture.md 1.1 (typed from the spec, not from our table).
GOPRO = {
    "net_g": dict(type="Transformer", inp_channels=3, out_channels=3, dim=48, num_blocks=[3, 5, 6, 6],
                  num_refinement_blocks=4, heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False,
                  LayerNorm_type="WithBias", dual_pixel_task=False, embed_dim=64, group=4),
    "net_le_dm": dict(type="latent_encoder_gelu", in_chans=3, embed_dim=64, block_num=6, group=4, stage=2,
                      patch_expansion=0.5, channel_expansion=4),
    "net_d": dict(type="denoising", in_channel=256, out_channel=256, inner_channel=512, block_num=4, group=4,
                  patch_expansion=0.5, channel_expansion=2),
}
REALBLUR = {
    "net_g": dict(GOPRO["net_g"], ffn_expansion_factor=2),
    "net_le_dm": dict(type="latent_encoder_lrelu", in_chans=3, embed_dim=64, block_num=5, group=4, stage=2,
                      patch_expansion=0.5, channel_expansion=4),
    "net_d": dict(type="simple_denoise", n_feats=64, n_denoise_res=4),
}


@pytest.mark.parametrize("spec,variant,diffusion", [
    (GOPRO, "HI-Diff GoPro", {"preset": "hidiff_local", "timesteps": 8}),
    (REALBLUR, "HI-Diff RealBlur", {"preset": "ldm", "timesteps": 16}),
])
def test_official_size_networks_are_recognised(spec, variant, diffusion):
    with torch.device("meta"):  # full-size networks, shapes only: no memory, no init cost
        sds = {k: build_network(v).state_dict() for k, v in spec.items()}
        rec = recognise(sds)
        assert rec.variant == variant and rec.diffusion == diffusion
        for name in spec:
            assert rec.networks[name] == spec[name], name
            rebuilt = build_network(rec.networks[name]).state_dict()
            assert [(k, v.shape) for k, v in rebuilt.items()] == [(k, v.shape) for k, v in sds[name].items()]


@pytest.mark.parametrize("spec", [
    TINY,
    {"net_g": dict(type="Transformer", dim=8, num_blocks=[1, 2, 1, 1], num_refinement_blocks=0, heads=[1, 2, 2, 4],
                   ffn_expansion_factor=2, bias=True, LayerNorm_type="BiasFree", embed_dim=16),
     "net_le_dm": dict(type="latent_encoder_lrelu", in_chans=3, stage=2, embed_dim=16, block_num=2),
     "net_d": dict(type="simple_denoise", n_feats=16, n_denoise_res=2)},
    {"net_g": dict(type="Transformer", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                   heads=[1, 1, 1, 1], use_prior=False)},
])
def test_custom_networks_round_trip_and_restore_identically(spec):
    """Recognised options rebuild networks that restore exactly like the originals."""
    torch.manual_seed(1)
    nets = {k: build_network(v).eval() for k, v in spec.items()}
    pipeline, rec = build_pipeline({k: n.state_dict() for k, n in nets.items()})
    assert rec.variant == "custom"
    if "net_d" in nets:
        preset = "hidiff_local" if spec["net_d"]["type"] == "denoising" else "ldm"
        direct = RestorationPipeline(nets["net_g"], net_le_dm=nets["net_le_dm"], net_d=nets["net_d"],
                                     diffusion=build_diffusion(preset))
    else:
        direct = RestorationPipeline(nets["net_g"])
    x = torch.rand(1, 3, 21, 30)
    noise = direct.noise(1, torch.Generator().manual_seed(5)) if direct.needs_prior else None
    with torch.no_grad():
        assert torch.equal(pipeline.restore(x, noise=noise), direct.restore(x, noise=noise))


def test_inconsistent_or_incomplete_weights_are_refused(tmp_path):
    sds = tiny_state_dicts()
    with pytest.raises(CheckpointError, match="net_d"):
        recognise({"net_g": sds["net_g"], "net_le_dm": sds["net_le_dm"]})
    other = tiny_state_dicts({**TINY, "net_le_dm": dict(TINY["net_le_dm"], embed_dim=8)})
    with pytest.raises(CheckpointError, match="prior width"):
        recognise({**sds, "net_le_dm": other["net_le_dm"]})
    stage1 = build_network(dict(type="latent_encoder_gelu", in_chans=6, stage=1, embed_dim=16,
                                block_num=1)).state_dict()
    with pytest.raises(CheckpointError, match="net_le .*stage 1"):
        recognise({**sds, "net_le_dm": stage1})
    with pytest.raises(CheckpointError, match="patch_embed"):
        recognise({**sds, "net_g": {"conv.weight": torch.zeros(3, 3, 3, 3)}})
    save_release(tmp_path / "partial", {"net_le_dm": sds["net_le_dm"]})
    with pytest.raises(CheckpointError, match="net_g.pth"):
        load_official(tmp_path / "partial")
    torch.save({"optimizer": {"lr": 1}}, tmp_path / "opt.pth")
    with pytest.raises(CheckpointError, match="opt.pth"):
        load_checkpoint(tmp_path / "opt.pth")


def test_an_output_format_that_cannot_keep_the_photo_is_refused_before_restoring_it(tmp_path, inputs, capsys,
                                                                                      monkeypatch):
    # alpha in a .jpg was refused only after the whole restoration (minutes for a large photo)
    import hidiff.cli.deblur as deblur

    release = save_release(tmp_path / "release", tiny_state_dicts())
    restored = []
    real = deblur.restore_image
    monkeypatch.setattr(deblur, "restore_image", lambda *a, **k: restored.append(1) or real(*a, **k))
    out = tmp_path / "o"
    assert main([str(inputs / "rgba.png"), str(inputs / "gray.jpg"), "-o", str(out), "--ext", "jpg",
                 "--weights", str(release), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cannot keep the alpha channel" in err and "1 deblurred, 0 skipped, 1 failed of 2" in err
    assert len(restored) == 1 and sorted(os.listdir(out)) == ["gray.jpg"]  # only the photo that could be kept
