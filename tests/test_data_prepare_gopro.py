"""GoPro preparation: archive layouts, checks and reports, crops, validation split, leakage guard, LMDB."""
from __future__ import annotations

import json
import os
import sys
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import run_env
from hidiff.data.image_io import read_raw
from hidiff.data.paired_dataset import PairedImageDataset
from hidiff.data.prepare.checks import Pair, PrepareReport, SplitScan, check_split
from hidiff.data.prepare.crops import crop_positions
from hidiff.data.prepare.gopro import prepare_gopro
from hidiff.data.prepare.placing import PrepareOptions
from hidiff.errors import DataError
from procs import run_checked

REPO = Path(__file__).resolve().parents[1]
H, W = 36, 64  # frames; crops of 32 with stride 16 give rows {0, 4} x cols {0, 16, 32}
TRAIN_SCENES = ["GOPR0001_11_00", "GOPR0002_11_00", "GOPR0003_11_00", "GOPR0004_11_00"]
TEST_SCENES = ["GOPR0101_11_00", "GOPR0102_11_00"]


def frame(seed):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def make_large(root: Path) -> Path:
    base = root / "GOPRO_Large"
    seed = 0
    for split, scenes in (("train", TRAIN_SCENES), ("test", TEST_SCENES)):
        for scene in scenes:
            for sub in ("blur", "blur_gamma", "sharp"):
                (base / split / scene / sub).mkdir(parents=True)
            for f in ("000001", "000002"):
                seed += 1
                for sub in ("blur", "blur_gamma", "sharp"):
                    cv2.imwrite(str(base / split / scene / sub / f"{f}.png"), frame(seed * 10 + len(sub)))
    return root


def options(dst, **kw):
    kw.setdefault("crop_size", 32)
    kw.setdefault("crop_stride", 16)
    kw.setdefault("val_crop", 16)
    kw.setdefault("workers", 2)
    return PrepareOptions(dst=dst, log=lambda _m: None, **kw)


def names(folder: Path):
    return sorted(p.stem for p in folder.iterdir() if p.suffix == ".png")


def test_crop_positions_official_recipe():
    rows, cols = [0, 208], [0, 256, 512, 768]
    assert crop_positions(720, 1280, 512, 256) == [(r, c) for r in rows for c in cols]
    assert crop_positions(512, 512, 512, 256) == [(0, 0)]
    assert crop_positions(H, W, 32, 16) == [(0, 0), (0, 16), (0, 32), (4, 0), (4, 16), (4, 32)]
    with pytest.raises(ValueError, match="shorter than the crop size"):
        crop_positions(100, 600, 512, 256)


def test_cli_official_archive(tmp_path):
    src = make_large(tmp_path / "src")
    dst = tmp_path / "datasets"
    cmd = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "gopro", "--src", str(src), "--dst", str(dst),
           "--crop-size", "32", "--crop-stride", "16", "--val-crop", "16", "--lmdb", "--workers", "2"]
    res = run_checked(cmd, env=run_env(), cwd=REPO, timeout=300)
    # counts differ from the official set: loud warnings, not an error
    assert "GoPro train: found 8 pairs, the official set has 2103" in res.stderr
    assert "GoPro test: found 4 pairs, the official set has 1111" in res.stderr
    g = dst / "GoPro"
    # validation = the last 2 training scenes, whole; never test frames
    assert names(g / "train" / "input") == [f"{s}-00000{i}" for s in TRAIN_SCENES[:2] for i in (1, 2)]
    assert names(g / "val" / "target") == [f"{s}-00000{i}" for s in TRAIN_SCENES[2:] for i in (1, 2)]
    assert len(names(g / "crops" / "train" / "input")) == 4 * 6
    assert names(g / "crops" / "val" / "input") == names(g / "val" / "input")
    assert names(dst / "test" / "GoPro" / "input") == [f"{s}-00000{i}" for s in TEST_SCENES for i in (1, 2)]
    test_keys = set(names(dst / "test" / "GoPro" / "input"))
    crop_sources = {n.rsplit("_y", 1)[0] for n in names(g / "crops" / "train" / "input")}
    assert not test_keys & (set(names(g / "crops" / "val" / "input")) | crop_sources)
    # crops are exact windows of the frames; val crops are centred
    src_blur = src / "GOPRO_Large" / "train" / TRAIN_SCENES[1] / "blur" / "000002.png"
    crop = read_raw(g / "crops" / "train" / "input" / f"{TRAIN_SCENES[1]}-000002_y0004_x0016.png")
    np.testing.assert_array_equal(crop, read_raw(src_blur)[4:36, 16:48])
    val_sharp = src / "GOPRO_Large" / "train" / TRAIN_SCENES[3] / "sharp" / "000001.png"
    vcrop = read_raw(g / "crops" / "val" / "target" / f"{TRAIN_SCENES[3]}-000001.png")
    np.testing.assert_array_equal(vcrop, read_raw(val_sharp)[10:26, 24:40])
    # whole frames are hard links of the sources, not copies
    linked = dst / "test" / "GoPro" / "target" / f"{TEST_SCENES[0]}-000001.png"
    assert os.path.samefile(linked, src / "GOPRO_Large" / "test" / TEST_SCENES[0] / "sharp" / "000001.png")
    report = json.loads((dst / "reports" / "prepare_gopro.json").read_text())
    assert report["counts"]["GoPro train"] == {"expected": 2103, "found": 8, "kept": 8, "undecodable": 0,
                                               "unmatched": 0}
    # LMDB of the training crops reads identically to the folders
    c = g / "crops" / "train"
    assert (c / "input.lmdb" / "meta_info.txt").is_file()
    disk = PairedImageDataset(str(c / "input"), str(c / "target"), "train", gt_size=16, seed=1)
    db = PairedImageDataset(str(c / "input.lmdb"), str(c / "target.lmdb"), "train", gt_size=16, seed=1,
                            io_backend="lmdb")
    for i in (0, 5, 23):
        assert torch.equal(disk[(i, 2)]["lq"], db[(i, 2)]["lq"])


def test_strict_fails_on_count_mismatch(tmp_path):
    src = make_large(tmp_path / "src")
    cmd = [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "gopro", "--src", str(src), "--dst",
           str(tmp_path / "out"), "--strict", "--no-verify"]
    res = run_checked(cmd, env=run_env(), cwd=REPO, timeout=300, returncode=1)
    assert "error: GoPro train: 1 problem(s) (--strict)" in res.stderr and "official set has 2103" in res.stderr


def test_strict_passes_when_counts_match(tmp_path):
    src = make_large(tmp_path / "src")
    pair = Pair("s_0001", {"input": src / "a.png", "target": src / "b.png"}, "s")
    report = PrepareReport("GoPro", log=lambda _m: None)
    assert check_split(SplitScan("GoPro", "train", [pair], {}), report, strict=True, verify=False,
                       expected=1) == [pair]
    with pytest.raises(DataError, match="GoPro train: no usable image pair"):     # an empty split never passes
        check_split(SplitScan("GoPro", "train", [], {}), report, strict=True, verify=True, expected=0)
    opts = options(tmp_path / "out", strict=False)
    prepare_gopro(src, opts)  # the real run works in non-strict mode


def test_official_test_val_warns_and_uses_test_crops(tmp_path):
    src = make_large(tmp_path / "src")
    report = prepare_gopro(src, options(tmp_path / "out", official_test_val=True, verify=False))
    assert any("leaks the benchmark" in w for w in report.warnings)
    g = tmp_path / "out" / "GoPro"
    assert names(g / "crops" / "val" / "input") == names(tmp_path / "out" / "test" / "GoPro" / "input")
    assert len(names(g / "train" / "input")) == 8  # every training scene trains, as officially
    assert "LEAKAGE" in (g / "crops" / "val" / "SOURCE.txt").read_text()


@pytest.mark.parametrize("first", [{"val_scenes": 1}, {"official_test_val": True}])
def test_a_validation_set_the_new_run_does_not_write_is_refused_or_removed(tmp_path, first):
    """After `--val-scenes 0`, an earlier run's validation crops (held-out scenes now trained on, or test
    crops) would stay and be read as this preparation's: refused, and removed with --overwrite."""
    src = make_large(tmp_path / "src")
    out = tmp_path / "out"
    prepare_gopro(src, options(out, verify=False, **first))
    g = out / "GoPro"
    assert names(g / "crops" / "val" / "input")
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    with pytest.raises(DataError, match=r"GoPro/(crops/)?val' holds a set from an earlier preparation .*--overwrite"):
        prepare_gopro(src, options(out, verify=False, val_scenes=0, overwrite=False))
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before  # nothing touched
    prepare_gopro(src, options(out, verify=False, val_scenes=0, overwrite=True))
    assert not (g / "crops" / "val").exists() and not (g / "val").exists()
    assert len(names(g / "train" / "input")) == 8
    assert not [p for p in out.iterdir() if p.name.startswith(".hidiff-prepare-")]


@pytest.mark.parametrize("scene", [TRAIN_SCENES[0], TRAIN_SCENES[3]])     # a training crop, a validation crop
def test_without_verify_a_pair_of_two_sizes_is_refused_at_cropping(tmp_path, scene):
    """--no-verify skips the size check; crops at one position of images of two sizes passed for pairs."""
    src = make_large(tmp_path / "src")
    cv2.imwrite(str(src / "GOPRO_Large" / "train" / scene / "sharp" / "000001.png"), frame(999)[:H - 8])
    with pytest.raises(DataError, match=rf"pair '{scene}-000001' has images of different sizes: .*{H}x{W}.*"
                                        rf"{H - 8}x{W}.*would not show the same scene"):
        prepare_gopro(src, options(tmp_path / "out", val_scenes=1, verify=False))
    assert not (tmp_path / "out").exists()


def test_a_download_of_the_test_set_alone_is_prepared(tmp_path):
    """Restormer's test/GoPro/{input,target} alone (to evaluate checkpoints) was refused: 'GoPro train: no
    usable image pair'. A split with no folder is skipped with a warning; one with a folder and no usable pair
    is still refused."""
    src = tmp_path / "GoPro"
    for role in ("input", "target"):
        (src / "test" / role).mkdir(parents=True)
        for i, scene in enumerate(TEST_SCENES):
            cv2.imwrite(str(src / "test" / role / f"{scene}-000001.png"), frame(i + (50 if role == "target" else 0)))
    report = prepare_gopro(tmp_path, options(tmp_path / "out", verify=False))
    assert any("GoPro train: not in the source" in w and "skipped" in w for w in report.warnings)
    assert names(tmp_path / "out" / "test" / "GoPro" / "input") == [f"{s}-000001" for s in TEST_SCENES]
    assert not (tmp_path / "out" / "GoPro").exists()
    for role in ("input", "target"):
        for f in (src / "test" / role).iterdir():
            f.unlink()
        (src / "test" / role).rmdir()
    (src / "test").rmdir()
    (src / "train").mkdir()
    with pytest.raises(DataError, match="GoPro: no split found|no usable image pair|layout"):
        prepare_gopro(tmp_path, options(tmp_path / "out2", verify=False))
    assert not (tmp_path / "out2").exists()


def test_the_official_archive_with_its_test_split_alone_is_prepared(tmp_path):
    """GOPRO_Large/test/<scene>/{blur,sharp} alone was refused ('layout not recognised'), naming the very layout
    that was there: the archive was recognised by its train split only."""
    shutil.rmtree(make_large(tmp_path / "src") / "GOPRO_Large" / "train")
    report = prepare_gopro(tmp_path / "src", options(tmp_path / "out", verify=False))
    assert any("GoPro train: not in the source" in w and "skipped" in w for w in report.warnings), report.warnings
    assert names(tmp_path / "out" / "test" / "GoPro" / "input") == [f"{s}-{f}" for s in sorted(TEST_SCENES)
                                                                    for f in ("000001", "000002")]


def test_readme_layout_and_val_scenes_option(tmp_path):
    src = tmp_path / "GoPro"
    seed = 0
    for split, scenes in (("train", TRAIN_SCENES), ("test", TEST_SCENES)):
        for role in ("input", "target"):
            (src / split / role).mkdir(parents=True)
        for scene in scenes:
            for f in ("000001", "000002"):
                seed += 1
                for role in ("input", "target"):
                    cv2.imwrite(str(src / split / role / f"{scene}-{f}.png"), frame(seed))
    report = prepare_gopro(tmp_path, options(tmp_path / "out", val_scenes=1, verify=False))
    assert "README" in report.notes[0]
    assert names(tmp_path / "out" / "GoPro" / "val" / "input") == [f"{TRAIN_SCENES[3]}-00000{i}" for i in (1, 2)]
    assert len(names(tmp_path / "out" / "GoPro" / "train" / "input")) == 6


def test_broken_archive_is_reported_by_file(tmp_path):
    src = make_large(tmp_path / "src")
    train = src / "GOPRO_Large" / "train"
    (train / TRAIN_SCENES[0] / "sharp" / "000002.png").unlink()  # missing target
    cv2.imwrite(str(train / TRAIN_SCENES[1] / "sharp" / "000009.png"), frame(99))  # extra target
    bad = train / TRAIN_SCENES[2] / "blur" / "000001.png"
    bad.write_bytes(bad.read_bytes()[:60])  # corrupt input
    report = prepare_gopro(src, options(tmp_path / "out", val_scenes=0))
    text = "\n".join(report.warnings)
    assert f"input file(s) without target: {train / TRAIN_SCENES[0] / 'blur' / '000002.png'}" in text
    assert f"target file(s) without input: {train / TRAIN_SCENES[1] / 'sharp' / '000009.png'}" in text
    assert f"cannot decode image '{bad}': truncated or corrupt PNG" in text
    kept = names(tmp_path / "out" / "GoPro" / "train" / "input")
    assert len(kept) == 6 and f"{TRAIN_SCENES[2]}-000001" not in kept
    with pytest.raises(DataError, match="4 problem"):
        prepare_gopro(src, options(tmp_path / "out2", strict=True))


def test_unrecognised_layout_and_existing_output(tmp_path):
    (tmp_path / "junk" / "stuff").mkdir(parents=True)
    with pytest.raises(DataError, match=r"GoPro: layout not recognised.*GOPRO_Large/.*contains: stuff/"):
        prepare_gopro(tmp_path / "junk", options(tmp_path / "out"))
    src = make_large(tmp_path / "src")
    prepare_gopro(src, options(tmp_path / "out", verify=False))
    with pytest.raises(DataError, match="not empty; pass --overwrite"):
        prepare_gopro(src, options(tmp_path / "out", verify=False))
    prepare_gopro(src, options(tmp_path / "out", verify=False, overwrite=True, mode="copy"))
    copied = tmp_path / "out" / "test" / "GoPro" / "input" / f"{TEST_SCENES[0]}-000001.png"
    assert copied.stat().st_nlink == 1
