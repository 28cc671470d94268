"""The frozen camera-shake benchmark (benchmarks/shake_benchmark.py) and the default model's recipe files."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage
import torch

from hidiff.archs import build_network
from hidiff.config import load_options
from hidiff.data.blur_kernels import synthesize_pair
from hidiff.runners.default_photos import SKIMAGE_PHOTOS, gather_photos
from hidiff.data.build import build_dataset
from hidiff.errors import DataError
from hidiff.evaluation.deconvolution import deconvolve, tune_on_pairs
from hidiff.evaluation.shake_benchmark import BLURRY, SetParams, build_or_verify
from hidiff.metrics.psnr import psnr_uint8
from test_deblur_cli import save_release, tiny_state_dicts

from conftest import run_env

REPO = Path(__file__).resolve().parents[1]
PARAMS = SetParams(crop=40, kernel_size=9)


def smooth_photo(h: int, w: int, phase: float) -> np.ndarray:
    """A smooth colour image with edges soft enough for deconvolution to recover (uint8 RGB)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([0.5 + 0.35 * np.sin(x / 5 + phase + y / 9), 0.5 + 0.3 * np.cos(y / 6 - phase),
                    0.5 + 0.3 * np.sin((x + y) / 8 + 2 * phase)], axis=-1)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def write_photos(folder: Path, n: int = 2, size=(56, 60)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"photo{i}.png"), smooth_photo(*size, phase=i)[:, :, ::-1])
    return folder


def tree_sha256(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_set_is_deterministic_kernels_kept_and_verified_later(tmp_path):
    photos = write_photos(tmp_path / "photos")
    a = build_or_verify(photos, tmp_path / "a", PARAMS, log=lambda m: None)
    build_or_verify(photos, tmp_path / "b", PARAMS, log=lambda m: None)
    assert tree_sha256(tmp_path / "a") == tree_sha256(tmp_path / "b")       # same bytes, built twice
    assert [it["key"] for it in a["items"]] == ["photo0", "photo1"]
    for it in a["items"]:
        k = np.load(tmp_path / "a" / "kernels" / f"{it['key']}.npy")
        assert k.shape == (9, 9) and k.min() >= 0 and abs(k.sum() - 1) < 1e-9
        assert it["noise_sigma"] == 0.01 and it["size_hw"] == [40, 40]
    before = tree_sha256(tmp_path / "a")
    assert build_or_verify(photos, tmp_path / "a", PARAMS, log=lambda m: None) == a   # verified, not rewritten
    assert tree_sha256(tmp_path / "a") == before

    with pytest.raises(DataError, match="built with"):
        build_or_verify(photos, tmp_path / "a", SetParams(crop=32, kernel_size=9), log=lambda m: None)
    cv2.imwrite(str(photos / "photo1.png"), smooth_photo(56, 60, phase=5.0))
    with pytest.raises(DataError, match="not those the set .* was built from.*photo1.png"):
        build_or_verify(photos, tmp_path / "a", PARAMS, log=lambda m: None)
    build_or_verify(photos, tmp_path / "c", PARAMS, log=lambda m: None)
    blurry = tmp_path / "c" / "input" / "photo0.png"
    blurry.write_bytes(blurry.read_bytes() + b"\0")
    with pytest.raises(DataError, match="input/photo0.png' is missing or changed"):
        build_or_verify(photos, tmp_path / "c", PARAMS, log=lambda m: None)
    assert tree_sha256(tmp_path / "a") == before


def test_wiener_with_the_true_kernel_beats_the_blurry_input():
    region = smooth_photo(96 + 8, 96 + 8, phase=0.3)
    pairs = [synthesize_pair(region, np.random.default_rng(s), kernel_size=9, noise_sigma=0.01) for s in range(4)]
    for pair in pairs:
        blurry_psnr = psnr_uint8(pair.blurry, pair.sharp)
        assert psnr_uint8(deconvolve(pair.blurry, pair.kernel, "wiener", 0.3), pair.sharp) > blurry_psnr + 1.0
    best, scores = tune_on_pairs(pairs, {"wiener": (0.01, 0.3, 0.03)})
    assert best == {"wiener": 0.3} and scores["wiener"][0.3] > max(scores["wiener"][0.01], scores["wiener"][0.03])
    with pytest.raises(ValueError, match="must be one of"):
        deconvolve(pair.blurry, pair.kernel, "inverse", 1)


def test_an_edge_taper_keeps_wieners_border_error_from_spreading():
    """Reflect padding does not fit an asymmetric shake at a crop's borders, and Wiener, a circular filter,
    spreads that error over the whole crop; the taper blends the borders towards the image's circular blur."""
    from hidiff.evaluation.deconvolution import edge_taper

    photo = cv2.imread(str(Path(skimage.__file__).parent / "data" / "camera.png"), cv2.IMREAD_COLOR)[100:300, 150:350]
    gains = []
    for s in range(3):
        pair = synthesize_pair(np.ascontiguousarray(photo[:, :, ::-1]), np.random.default_rng(s), kernel_size=31,
                               noise_sigma=0.01)
        plain = psnr_uint8(deconvolve(pair.blurry, pair.kernel, "wiener", 0.01), pair.sharp)
        gains.append(psnr_uint8(deconvolve(pair.blurry, pair.kernel, "wiener_taper", 0.01), pair.sharp) - plain)
    assert min(gains) > 0.5, gains
    x = np.random.default_rng(0).random((40, 50))
    k = np.zeros((5, 5))
    k[2, 1:4] = 1 / 3
    tapered = edge_taper(x, k)
    np.testing.assert_allclose(tapered[15:25, 15:35], x[15:25, 15:35])        # the interior is untouched
    assert not np.allclose(tapered[0], x[0]) and not np.allclose(tapered[:, 0], x[:, 0])


def test_script_scores_input_deconvolution_and_a_model(tmp_path):
    photos = write_photos(tmp_path / "test")
    tune = write_photos(tmp_path / "train", size=(50, 52))
    weights = save_release(tmp_path / "tiny", tiny_state_dicts())
    other = save_release(tmp_path / "tiny2", tiny_state_dicts(seed=1))
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "benchmarks" / "shake_benchmark.py"), "--photos", str(photos),
           "--tune-photos", str(tune), "--model", f"tiny={weights}", "--model", f"tiny={other}",
           "--baseline", BLURRY, "--set", str(tmp_path / "set"),
           "--out", str(out), "--crop", "40", "--kernel-size", "9"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=run_env(), timeout=300)
    assert first.returncode == 0, first.stderr
    table = (out / "results.md").read_text()
    assert table in first.stdout and "| tiny |" in table and f"| {BLURRY} |" in table
    assert "Wiener, true kernel (balance" in table and "Richardson-Lucy, true kernel (" in table
    assert "Wiener with edge taper, true kernel (balance" in table
    tuned = json.loads((out / "tuned.json").read_text())
    assert tuned["photos"] == ["photo0.png", "photo1.png"]
    assert set(tuned["chosen"]) == {"wiener", "wiener_taper", "richardson_lucy"}
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 6 and {r["key"] for r in rows} == {"photo0", "photo1"}
    assert sorted(r["run"] for r in rows if r["method"] == "tiny") == ["0", "0", "1", "1"]
    with open(out / "results.csv") as f:
        summary = {r["method"]: r for r in csv.DictReader(f)}
    assert float(summary[BLURRY]["gain_db"]) == 0.0 and summary["tiny"]["images"] == "2"
    assert summary["tiny"]["runs"] == "2" and f"Against `{BLURRY}`" in table and "| tiny | 2 vs 1 |" in table
    tiny = [float(r["psnr"]) for r in rows if r["method"] == "tiny"]
    assert float(summary["tiny"]["psnr"]) == pytest.approx(np.mean(tiny), abs=1e-3)

    copy = tmp_path / "copy"
    shutil.copytree(weights, copy)
    for same in (f"{weights}/", f"{copy}"):     # one run spelled twice, or copied, would pass for two seeds
        dup = subprocess.run(cmd[:6] + ["--model", f"tiny={weights}", "--model", f"tiny={same}", "--out",
                                        str(tmp_path / "o2"), "--set", str(tmp_path / "s2")],
                             capture_output=True, text=True, env=run_env(), timeout=300)
        assert dup.returncode == 2 and "each run is scored once" in dup.stderr, dup.stderr
        assert not (tmp_path / "o2").exists() and not (tmp_path / "s2").exists()
    again = subprocess.run(cmd[:4] + ["--model", f"tiny={weights}", "--set", str(tmp_path / "set"),
                                      "--out", str(out), "--crop", "40", "--kernel-size", "9"],
                           capture_output=True, text=True, env=run_env(), timeout=300)
    assert again.returncode == 0, again.stderr          # no tuning, no baseline: the earlier ones' files go
    assert not (out / "tuned.json").exists() and not (out / "comparison.csv").exists()
    assert "every sha256 matches" in again.stdout        # the set of the first run, verified, not rebuilt
    with open(out / "per_image.csv") as f:
        rerun = list(csv.DictReader(f))
    # the same scores for the same run (run 0 of tiny) and the blurry input: the model is seeded
    assert sorted((r["method"], r["run"]) for r in rerun) == sorted([(BLURRY, "0"), ("tiny", "0")] * 2)
    assert rerun == [r for r in rows if (r["method"], r["run"]) in ((BLURRY, "0"), ("tiny", "0"))]

    x8 = subprocess.run(cmd[:4] + ["--model", f"tiny={weights}", "--set", str(tmp_path / "set"), "--out",
                                   str(tmp_path / "x8"), "--crop", "40", "--kernel-size", "9", "--self-ensemble",
                                   "--baseline", "tiny x8"], capture_output=True, text=True, env=run_env(), timeout=300)
    assert x8.returncode == 0, x8.stderr
    with open(tmp_path / "x8" / "per_image.csv") as f:
        ensembled = list(csv.DictReader(f))
    assert sorted({r["method"] for r in ensembled}) == sorted({BLURRY, "tiny", "tiny x8"})
    assert [r for r in ensembled if r["method"] != "tiny x8"] == [r for r in rerun]  # the plain rows unchanged
    assert [r["psnr"] for r in ensembled if r["method"] == "tiny x8"] != [r["psnr"] for r in rerun
                                                                          if r["method"] == "tiny"]
    assert "Against `tiny x8`" in x8.stdout and "row `tiny x8`" in x8.stdout
    clash = subprocess.run(cmd[:2] + ["--photos", str(photos), "--model", f"a={weights}", "--model",
                                      f"a x8={copy}", "--self-ensemble", "--out", str(tmp_path / "o2"),
                                      "--set", str(tmp_path / "s2")], capture_output=True, text=True, env=run_env())
    assert clash.returncode == 2 and "that name is the x8 row of --model a" in clash.stderr, clash.stderr
    assert not (tmp_path / "o2").exists() and not (tmp_path / "s2").exists()

    bad = subprocess.run(cmd[:2] + ["--photos", str(photos), "--model", "oops", "--out", str(tmp_path / "o2"),
                                    "--set", str(tmp_path / "s2")], capture_output=True, text=True, env=run_env())
    assert bad.returncode == 2 and "expected NAME=SOURCE" in bad.stderr
    assert not (tmp_path / "o2").exists() and not (tmp_path / "s2").exists()
    bad = subprocess.run(cmd[:2] + ["--photos", str(photos), "--model", f"a={weights}", "--baseline", "b",
                                    "--out", str(tmp_path / "o2"), "--set", str(tmp_path / "s2")],
                         capture_output=True, text=True, env=run_env())
    assert bad.returncode == 2 and "--baseline 'b': not a --model NAME (given: a)" in bad.stderr
    assert not (tmp_path / "o2").exists() and not (tmp_path / "s2").exists()


@pytest.mark.parametrize("stage", ["stage1", "stage2", "plain"])
def test_recipe_loads_builds_and_reads_the_users_photos(tmp_path, stage):
    photos = write_photos(tmp_path / "photos", size=(180, 190))
    path = REPO / "options" / f"default_{stage}.yml"
    opt = load_options(path, overrides=[f"datasets.train.sharp_root={photos}", f"datasets.val.sharp_root={photos}"])
    train = opt.datasets["train"].params
    assert (train["kernel_size"], train["kernel_size_min"], list(train["noise_sigma"])) == (41, 9, [0.0, 0.02])
    nets = {}
    for suffix, block in opt.networks.items():
        with torch.device("meta"):
            nets[suffix] = build_network(block, f"network_{suffix}")
    if stage == "stage2":      # the networks a deblurring model ships: fp16 weights <= 4 MB
        shipped = sum(p.numel() for s in ("g", "le_dm", "d") for p in nets[s].parameters())
        assert shipped * 2 <= 4_000_000
    ds = build_dataset(opt.datasets["train"], opt.manual_seed)
    item = ds[(0, 0)]
    assert item["lq"].shape == item["gt"].shape == (3, train["gt_size"], train["gt_size"])


def test_default_photos_gathered_with_attribution(tmp_path):
    mine = write_photos(tmp_path / "mine")
    (mine / "ATTRIBUTION.md").write_text("photo0.png: CC0, me\n")
    photos = gather_photos(tmp_path / "dst", [mine], log=lambda m: None)
    assert {p.name for p in photos} == {Path(n).stem + ".png" for n in SKIMAGE_PHOTOS} | {"photo0.png", "photo1.png"}
    text = (tmp_path / "dst" / "ATTRIBUTION.md").read_text()
    assert "photo0.png: CC0, me" in text and "| coffee.png | CC0, Rachel Michetti |" in text
    clash = write_photos(tmp_path / "clash", n=1)
    (clash / "photo0.png").rename(clash / "coffee.png")
    with pytest.raises(DataError, match="same name"):
        gather_photos(tmp_path / "dst2", [clash], log=lambda m: None)
    assert not (tmp_path / "dst2").exists()


def test_gathering_into_a_folder_with_other_photos_is_refused(tmp_path):
    """A second gathering kept the first one's photos (test photos, say) and left them out of ATTRIBUTION.md."""
    test = write_photos(tmp_path / "test", n=1)
    (test / "photo0.png").rename(test / "kodim23.png")
    train = write_photos(tmp_path / "train")
    gather_photos(tmp_path / "dst", [test], skimage=False, log=lambda m: None)
    before = sorted(p.name for p in (tmp_path / "dst").iterdir())
    with pytest.raises(DataError, match=r"holds 1 image\(s\) that this gathering does not bring \(kodim23.png\)"):
        gather_photos(tmp_path / "dst", [train], skimage=False, log=lambda m: None)
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == before
    changed = write_photos(tmp_path / "changed", n=1, size=(70, 72))       # the same name, new bytes
    (changed / "photo0.png").rename(changed / "kodim23.png")
    gather_photos(tmp_path / "dst", [changed], skimage=False, log=lambda m: None)
    assert (tmp_path / "dst" / "kodim23.png").read_bytes() == (changed / "kodim23.png").read_bytes()


def test_tile_estimate_prints_the_recipes_figures(tmp_path):
    from hidiff.inference.tiler import TileGrid, auto_tile_options

    out = tmp_path / "estimate.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tile_estimate.py"), "-opt",
                           str(REPO / "options" / "default_stage2.yml"), "--photo", "600x800", "--runs", "1",
                           "--json", str(out)], capture_output=True, text=True, env=run_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    f = json.loads(out.read_text())
    assert f["tiles"] == len(TileGrid.build(600, 800, auto_tile_options(600, 800, "cpu")))
    assert f["tile_hw"] == [256, 256]
    assert f["seconds_all_cores"] == pytest.approx(f["tiles"] * f["cpu_s_per_tile"] / 2)
    assert f["shipped_params"] * 2 <= 4_000_000 and f["gmac_per_tile"] > 0
    assert f"600x800 photo: {f['tiles']} tiles" in done.stdout and "MiB in fp16" in done.stdout


def test_runs_of_one_recipe_are_one_row_with_their_spread_and_a_compared_interval(tmp_path):
    from hidiff.evaluation.shake_benchmark import compare, summarize, write_results
    rng = np.random.default_rng(0)
    keys = [f"img{i}" for i in range(6)]
    base = rng.normal(22.0, 2.0, size=6)
    rows = [{"key": k, "method": BLURRY, "run": 0, "psnr": float(b), "ssim": 0.8} for k, b in zip(keys, base)]
    for run, shift in enumerate([2.9, 3.1, 3.0]):
        rows += [{"key": k, "method": "default", "run": run, "psnr": float(b + shift + 0.01 * i), "ssim": 0.9}
                 for i, (k, b) in enumerate(zip(keys, base))]
    rows += [{"key": k, "method": "no-prior", "run": 0, "psnr": float(b + 2.0), "ssim": 0.88}
             for k, b in zip(keys, base)]
    summary = {r["method"]: r for r in summarize(rows)}
    assert summary["default"]["runs"] == 3 and summary["no-prior"]["runs"] == 1
    assert summary["default"]["gain_db"] == pytest.approx(3.025, abs=1e-9)
    assert summary["default"]["psnr_std"] == pytest.approx(0.1, abs=1e-9) and np.isnan(summary["no-prior"]["psnr_std"])
    by = {c["method"]: c for c in compare(rows, "default", trained={"default", "no-prior"})}
    assert by["no-prior"]["diff_db"] == pytest.approx(-1.025, abs=1e-9)
    assert by["no-prior"]["high"] < 0 and by["no-prior"]["verdict"] == "lower than default"
    assert by[BLURRY]["baseline_runs"] == 3 and set(by) == {BLURRY, "no-prior"}
    files = write_results(tmp_path, rows, ["# t"], baseline="default", trained={"default", "no-prior"})
    text = files["results.md"].read_text()
    assert "| default | 25." in text and " ± 0.10 | 0.9000 | +3.03 | 6 | 3 |" in text
    assert "| no-prior | 1 vs 3 | -1.03 | [" in text
    with open(files["per_image.csv"]) as f:
        assert sum(1 for r in csv.DictReader(f) if r["method"] == "default" and r["run"] == "2") == 6
    with pytest.raises(DataError, match="method 'nothing'"):
        compare(rows, "nothing")
    write_results(tmp_path, rows, ["# t"])          # no baseline now: no comparison of other results stays
    assert not (tmp_path / "comparison.csv").exists() and "Against" not in files["results.md"].read_text()
