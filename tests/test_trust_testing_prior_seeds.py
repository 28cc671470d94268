"""--prior-seeds K in test.py and hidiff-deblur: K initial noises per image, mean +- std, mean image, std map."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import PY, REPO, run_env
from hidiff.archs import build_network
from hidiff.cli.deblur import main as deblur_main
from hidiff.config import options_from_text
from hidiff.data.build import build_dataset
from hidiff.diffusion import build_diffusion
from hidiff.evaluation.protocols import get_protocol
from hidiff.inference.pipeline import RestorationPipeline
from hidiff.inference.tiler import restore_image
from hidiff.runners.prior_seeds import prior_seed
from hidiff.data.image_io import to_uint8
from procs import run_checked

sys.path.insert(0, str(Path(__file__).parent))
from test_trust_testing import NETS, option_text, save_release, tiny_state_dicts, write_pairs  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    data = write_pairs(root / "data", [(16, 24), (20, 16)])
    sds = tiny_state_dicts(0)
    sds["d"] = {k: v * 3 if v.is_floating_point() else v for k, v in sds["d"].items()}  # a prior that varies
    rel = save_release(root / "rel", sds)
    opt = root / "t.yml"
    opt.write_text(option_text(root, data, rel, timesteps=3))
    return root, data, rel, opt, sds


def restorations(opt_path: Path, sds: dict, k: int) -> dict:
    """{key: ([K float outputs], gt)}: seed k of an image is prior_seed(stem, manual_seed, k)."""
    opts = options_from_text(opt_path.read_text(), is_train=False)
    nets = {s: build_network(NETS[s]) for s in NETS}
    for s, net in nets.items():
        net.load_state_dict(sds[s])
        net.eval()
    pipe = RestorationPipeline(nets["g"], net_le_dm=nets["le_dm"], net_d=nets["d"],
                               diffusion=build_diffusion("hidiff_local", timesteps=3))
    out = {}
    for item in build_dataset(opts.datasets["test_1"], opts.manual_seed):
        with torch.no_grad():
            outs = [restore_image(pipe, item["lq"].unsqueeze(0), "whole", seed=prior_seed(item["key"], 7, i))
                    for i in range(k)]
        out[item["key"]] = (outs, to_uint8(item["gt"]))
    return out


def test_test_py_reports_mean_and_std_over_seeds_and_writes_mean_image_and_std_map(setup):
    root, _, _, opt, sds = setup
    run_checked([PY, REPO / "scripts" / "test.py", "-opt", opt, "--prior-seeds", "3", "--std-map"], cwd=REPO,
                env=run_env(), timeout=600)
    out = root / "results" / "test_tiny" / "rel"
    rows = {r["name"]: r for r in csv.DictReader(open(out / "Tiny" / "metrics.csv"))}
    gopro = get_protocol("gopro")
    for key, (outs, gt) in restorations(opt, sds, 3).items():
        psnrs = [gopro.score_pair(to_uint8(o), gt)["psnr_uint8_rgb"] for o in outs]
        assert np.std(psnrs) > 0  # the seeds really differ
        assert float(rows[key]["psnr_uint8_rgb"]) == pytest.approx(np.mean(psnrs), abs=1e-9)
        assert float(rows[key]["psnr_uint8_rgb_std"]) == pytest.approx(np.std(psnrs, ddof=1), abs=1e-9)
        written = cv2.imread(str(out / "visualization" / "Tiny" / f"{key}.png"))[:, :, ::-1]
        np.testing.assert_array_equal(written, to_uint8(torch.stack(outs).mean(0)))
        std = cv2.imread(str(out / "std_map" / "Tiny" / f"{key}.png"), cv2.IMREAD_UNCHANGED)
        want = torch.stack([o[0] for o in outs]).std(0).mean(0).mul(65535).round().numpy().astype(np.uint16)
        assert std.dtype == np.uint16 and std.shape == written.shape[:2]
        np.testing.assert_array_equal(std, want)


def test_deblur_prior_seeds_first_seed_is_the_single_seed_run(setup, tmp_path, capsys):
    _, data, rel, _, _ = setup
    img = str(data / "input" / "img00.png")
    assert deblur_main([img, "-o", str(tmp_path / "one"), "--weights", str(rel), "--quiet"]) == 0
    assert deblur_main([img, "-o", str(tmp_path / "first"), "--weights", str(rel), "--prior-seeds", "2",
                        "--prior-image", "first", "--quiet"]) == 0
    assert deblur_main([img, "-o", str(tmp_path / "mean"), "--weights", str(rel), "--prior-seeds", "2",
                        "--std-map", "--quiet"]) == 0
    one = (tmp_path / "one" / "img00.png").read_bytes()
    assert (tmp_path / "first" / "img00.png").read_bytes() == one
    assert (tmp_path / "mean" / "img00.png").read_bytes() != one
    std = cv2.imread(str(tmp_path / "mean" / "img00_std.png"), cv2.IMREAD_UNCHANGED)
    assert std.dtype == np.uint16 and std.shape == (16, 24) and std.max() > 0
    assert deblur_main([img, "-o", str(tmp_path / "bad"), "--weights", str(rel), "--std-map"]) == 2
    assert "--std-map needs --prior-seeds" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_deblur_std_map_never_overwrites_an_input_or_another_output(setup, tmp_path, capsys):
    """`<name>_std.png` is an output like the image itself: it may not land on an input, on another image's
    output in the same run, or on an earlier run's file without --overwrite."""
    _, data, rel, _, _ = setup
    src = tmp_path / "in"
    src.mkdir()
    a = cv2.imread(str(data / "input" / "img00.png"))
    cv2.imwrite(str(src / "a.png"), a)
    cv2.imwrite(str(src / "a_std.png"), a[:, :20])      # another photo whose name is a's std map's
    before = (src / "a_std.png").read_bytes()
    flags = ["--weights", str(rel), "--prior-seeds", "2", "--std-map", "--quiet"]
    # -o is the input folder, written as tif: a.tif is new, but a's std map would replace the input a_std.png
    assert deblur_main([str(src), "-o", str(src), "--ext", "tif"] + flags) == 1
    err = capsys.readouterr().err
    assert f"its output '{src / 'a_std.png'}' would overwrite the input file" in err
    assert (src / "a_std.png").read_bytes() == before
    assert sorted(q.name for q in src.iterdir()) == ["a.png", "a_std.png", "a_std.tif", "a_std_std.png"]
    for made in ("a_std.tif", "a_std_std.png"):         # a_std.png's own outputs, which clash with nothing
        (src / made).unlink()
    # another folder: a's std map and the restored a_std.png would share a name; one is refused, none is lost
    out = tmp_path / "out"
    assert deblur_main([str(src), "-o", str(out)] + flags) == 1
    err = capsys.readouterr().err
    assert "output name a_std.png already used by" in err and "1 deblurred, 0 skipped, 1 failed of 2" in err
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a.png", "a_std.png"]
    assert cv2.imread(str(out / "a_std.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16   # a's std map, whole
    # an earlier run's std map is kept unless --overwrite
    (out / "a.png").unlink()
    kept = (out / "a_std.png").read_bytes()
    assert deblur_main([str(src / "a.png"), "-o", str(out)] + flags) == 0
    assert f"skip: {out / 'a_std.png'} exists" in capsys.readouterr().err
    assert not (out / "a.png").exists() and (out / "a_std.png").read_bytes() == kept
