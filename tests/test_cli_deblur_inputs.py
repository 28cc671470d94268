"""hidiff-deblur (and hidiff-test) refuse bad usage before anything is skipped, written or created: weights,
device and tiling flags whatever exists, inputs naming no image, weights flags that cannot mean what was asked;
a multi-page TIFF is a per-file error."""
from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import tifffile
import torch

from conftest import OPTIONS, REPO, run_env
from hidiff.cli.deblur import main
from procs import run_checked
from test_deblur_cli import save_release, tiny_state_dicts


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return save_release(tmp_path_factory.mktemp("w") / "HI_Diff_tiny", tiny_state_dicts())


@pytest.fixture()
def photo(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "in" / "x.png"
    path.parent.mkdir()
    cv2.imwrite(str(path), cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (0, 0), 2))
    return path


def listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


# ---- weights, device and tiling are checked even when every output exists ----

def test_bad_options_exit_2_even_when_every_output_exists_subprocess(tmp_path, photo):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.png").write_bytes(photo.read_bytes())
    before = listing(tmp_path)
    proc = run_checked([sys.executable, REPO / "scripts" / "deblur.py", str(photo), "-o", str(out),
                        "--weights", str(tmp_path / "nonexistent"), "--tile", "12"],
                       cwd=tmp_path, env=run_env(), timeout=300, returncode=2)
    assert f"--weights {tmp_path / 'nonexistent'}: folder not found" in proc.stderr
    assert "skipped" not in proc.stderr and listing(tmp_path) == before


@pytest.mark.parametrize("case", ["tile", "device", "corrupt_weights"])
def test_each_bad_option_is_found_whatever_exists(tmp_path, photo, release, capsys, case):
    if case == "device" and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "net_g.pth").write_bytes(b"not a torch file")
    flags, expected = {"tile": (["--weights", str(release), "--tile", "12"], "--tile 12: must be a multiple of 8"),
                       "device": (["--weights", str(release), "--device", "cuda"], "no CUDA device is available"),
                       "corrupt_weights": (["--weights", str(junk)], str(junk / "net_g.pth"))}[case]
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.png").write_bytes(photo.read_bytes())
    assert main([str(photo), "-o", str(out), "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert expected in err and "skip:" not in err
    # with good options the existing output is skipped, untouched
    before = listing(out)
    assert main([str(photo), "-o", str(out), "--weights", str(release), "--quiet"]) == 0
    assert "0 deblurred, 1 skipped" in capsys.readouterr().err and listing(out) == before


# ---- inputs naming no image are usage errors ----

@pytest.mark.parametrize("kind", ["missing", "empty_folder", "empty_tree", "no_match"])
def test_an_input_naming_no_image_is_a_usage_error(tmp_path, photo, release, capsys, kind):
    (tmp_path / "empty").mkdir()
    spec, extra, expected = {
        "missing": (tmp_path / "nope.png", [], f"input '{tmp_path / 'nope.png'}' does not exist"),
        "empty_folder": (tmp_path / "empty", [], f".pgm) in folder '{tmp_path / 'empty'}'"),
        "empty_tree": (tmp_path / "empty", ["-r"], f".pgm) in the folder tree '{tmp_path / 'empty'}'"),
        "no_match": (tmp_path / "in" / "*.jpg", [], f"no image files match '{tmp_path / 'in' / '*.jpg'}'"),
    }[kind]
    out = tmp_path / "out"
    assert main([str(photo), str(spec), "-o", str(out), "--weights", str(release), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "nothing was deblurred" in err and str(spec) in err
    assert "summary:" not in err and not out.exists()


# ---- a multi-page TIFF ----

def test_a_multi_page_tiff_is_a_per_file_error_naming_the_page_count(tmp_path, photo, release, capsys):
    img = cv2.imread(str(photo))[:, :, ::-1]
    tifffile.imwrite(tmp_path / "in" / "pages.tif", np.stack([img, img[::-1], img[:, ::-1]]), photometric="rgb")
    with tifffile.TiffWriter(tmp_path / "in" / "thumb.tif") as tif:    # a page plus its reduced-size preview
        tif.write(img, photometric="rgb")
        tif.write(img[::4, ::4], photometric="rgb", subfiletype=1)
    out = tmp_path / "out"
    assert main([str(tmp_path / "in"), "-o", str(out), "--weights", str(release), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"cannot process '{tmp_path / 'in' / 'pages.tif'}': a multi-page TIFF of 3 pages" in err
    assert "2 deblurred, 0 skipped, 1 failed of 3" in err
    assert sorted(p.name for p in out.iterdir()) == ["thumb.tif", "x.png"]


# ---- weights flags that cannot mean what was asked ----

def test_a_file_given_to_weights_points_to_its_folder_and_to_checkpoint(tmp_path, photo, release, capsys):
    net_g = release / "net_g.pth"
    assert main([str(photo), "-o", str(tmp_path / "out"), "--weights", str(net_g)]) == 2
    err = capsys.readouterr().err
    assert (f"--weights '{net_g}' is a file, but --weights takes a model folder" in err
            and f"--weights '{release}'" in err and f"--checkpoint '{net_g}'" in err and "folder not found" not in err)
    assert not (tmp_path / "out").exists()


def test_experiments_root_without_experiment_is_refused(tmp_path, photo, release, capsys):
    assert main([str(photo), "-o", str(tmp_path / "out"), "--weights", str(release),
                 "--experiments-root", str(tmp_path)]) == 2
    assert f"--experiments-root {tmp_path} is only used with --experiment NAME" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_hidiff_test_refuses_the_same_weights_flags(tmp_path, release, capsys):
    from hidiff.cli.test import main as test_main

    opt = str(OPTIONS / "test_gopro.yml")
    assert test_main(["-opt", opt, "--experiments-root", str(tmp_path)]) == 2
    assert f"--experiments-root {tmp_path} is only used with --experiment NAME" in capsys.readouterr().err
    assert test_main(["-opt", opt, "--weights", str(release / "net_g.pth")]) == 2
    assert "is a file, but --weights takes a model folder" in capsys.readouterr().err
