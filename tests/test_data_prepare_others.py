"""HIDE, RealBlur and DPDD preparation from fake archives in their official layouts."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hidiff.data.image_io import read_raw
from hidiff.data.prepare.dpdd import prepare_dpdd
from hidiff.data.prepare.hide import prepare_hide
from hidiff.data.prepare.placing import PrepareOptions
from hidiff.data.prepare.realblur import prepare_realblur
from hidiff.errors import DataError


def img(seed, h=20, w=24, dtype=np.uint8):
    hi = 256 if dtype == np.uint8 else 65536
    return np.random.default_rng(seed).integers(0, hi, (h, w, 3), dtype=dtype)


def write(path: Path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), arr)


def opts(dst, **kw):
    return PrepareOptions(dst=dst, log=lambda _m: None, workers=2, **kw)


def names(folder: Path):
    return sorted(p.stem for p in folder.iterdir() if p.suffix == ".png")


# ---------------------------------------------------------------- HIDE
def make_hide(root: Path) -> Path:
    base = root / "HIDE_dataset"
    for i, (sub, name) in enumerate([("test-close-ups", "1fromGOPR0950"), ("test-close-ups", "2fromGOPR0950"),
                                     ("test-long-shot", "5fromGOPR1096")]):
        write(base / "test" / sub / f"{name}.png", img(i))
        write(base / "GT" / f"{name}.png", img(100 + i))
    write(base / "GT" / "9fromGOPR0001.png", img(50))  # a training target: ignored
    write(base / "train" / "9fromGOPR0001.png", img(51))
    return root


def test_hide_official_layout(tmp_path):
    src = make_hide(tmp_path / "src")
    report = prepare_hide(src, opts(tmp_path / "out"))
    out = tmp_path / "out" / "test" / "HIDE"
    assert names(out / "input") == names(out / "target") == ["1fromGOPR0950", "2fromGOPR0950", "5fromGOPR1096"]
    np.testing.assert_array_equal(read_raw(out / "target" / "5fromGOPR1096.png"), img(102))
    subsets = json.loads((out / "subsets.json").read_text())
    assert subsets == {"1fromGOPR0950": "close-ups", "2fromGOPR0950": "close-ups", "5fromGOPR1096": "long-shot"}
    assert report.warnings == ["HIDE test: found 3 pairs, the official set has 2025",
                               "HIDE test: continuing with 3 good pair(s); use --strict to stop on problems"]


def test_hide_missing_gt_is_named(tmp_path):
    src = make_hide(tmp_path / "src")
    (src / "HIDE_dataset" / "GT" / "2fromGOPR0950.png").unlink()
    report = prepare_hide(src, opts(tmp_path / "out"))
    assert any("test input(s) without a GT image" in w and "2fromGOPR0950.png" in w for w in report.warnings)
    assert names(tmp_path / "out" / "test" / "HIDE" / "input") == ["1fromGOPR0950", "5fromGOPR1096"]


def test_two_files_of_one_stem_are_left_out_not_guessed(tmp_path):
    """A stray a.jpg beside a.png in target/: the pair was kept with whichever came last, against the README's
    'the offending pairs are left out'."""
    for role in ("input", "target"):
        for i, k in enumerate(("a", "b")):
            write(tmp_path / "src" / "test" / "HIDE" / role / f"{k}.png", img(i + (9 if role == "target" else 0)))
    write(tmp_path / "src" / "test" / "HIDE" / "target" / "a.jpg", img(50))
    report = prepare_hide(tmp_path / "src", opts(tmp_path / "out"))
    assert any("sharing a stem" in w and "a.jpg" in w for w in report.warnings), report.warnings
    out = tmp_path / "out" / "test" / "HIDE"
    assert names(out / "input") == names(out / "target") == ["b"]


def test_official_layout_leaves_out_names_two_inputs_share(tmp_path):
    """Official layout: a stray a.jpg beside a.png in one subset was dropped without a word (the last file won),
    and a name in both subsets was warned about but paired with the long-shot file anyway."""
    src = make_hide(tmp_path / "src")
    base = src / "HIDE_dataset"
    write(base / "test" / "test-close-ups" / "1fromGOPR0950.jpg", img(60))  # same name, one subset
    write(base / "test" / "test-close-ups" / "7fromGOPR0950.png", img(61))  # same name, both subsets
    write(base / "test" / "test-long-shot" / "7fromGOPR0950.png", img(62))
    write(base / "GT" / "7fromGOPR0950.png", img(63))
    write(base / "GT" / "9fromGOPR0001.jpg", img(64))  # a training target's clash: no test input's business
    report = prepare_hide(src, opts(tmp_path / "out"))
    out = tmp_path / "out" / "test" / "HIDE"
    assert names(out / "input") == names(out / "target") == ["2fromGOPR0950", "5fromGOPR1096"]
    shared = [w for w in report.warnings if "sharing a name" in w]
    assert shared and "1fromGOPR0950.jpg" in shared[0] and "7fromGOPR0950" in shared[0], report.warnings
    assert "9fromGOPR0001" not in " ".join(report.warnings)
    assert json.loads((out / "subsets.json").read_text()) == {"2fromGOPR0950": "close-ups",
                                                             "5fromGOPR1096": "long-shot"}
    with pytest.raises(DataError, match="sharing a name"):
        prepare_hide(src, opts(tmp_path / "strict", strict=True))
    assert not (tmp_path / "strict" / "test").exists()


def test_official_layout_names_a_test_input_whose_gt_name_is_shared(tmp_path):
    src = make_hide(tmp_path / "src")
    write(src / "HIDE_dataset" / "GT" / "2fromGOPR0950.jpg", img(70))
    report = prepare_hide(src, opts(tmp_path / "out"))
    assert any("sharing a name" in w and "2fromGOPR0950.jpg" in w for w in report.warnings), report.warnings
    assert not any("without a GT image" in w for w in report.warnings), report.warnings
    assert names(tmp_path / "out" / "test" / "HIDE" / "input") == ["1fromGOPR0950", "5fromGOPR1096"]


def test_a_split_without_one_usable_pair_writes_nothing_and_keeps_a_prepared_set(tmp_path):
    """Every GT missing: the split is refused; with --overwrite it used to replace a good set by empty folders."""
    src = make_hide(tmp_path / "src")
    prepare_hide(src, opts(tmp_path / "out"))
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    for gt in (src / "HIDE_dataset" / "GT").glob("*fromGOPR0*.png"):
        gt.unlink()
    for gt in (src / "HIDE_dataset" / "GT").glob("*.png"):
        gt.unlink()
    with pytest.raises(DataError, match="HIDE test: no usable image pair .*nothing was written"):
        prepare_hide(src, opts(tmp_path / "out", overwrite=True))
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before


def test_a_set_prepared_again_never_mixes_with_the_earlier_one(tmp_path):
    """An LMDB store of a first run stayed beside the image folders of a second run (--overwrite replaced only
    what the second run wrote): readers of input.lmdb got the old images. Now --overwrite replaces the set whole,
    and without it the leftover is named before any work."""
    src = make_hide(tmp_path / "src")
    out = tmp_path / "out" / "test" / "HIDE"
    prepare_hide(src, opts(tmp_path / "out", lmdb=True))
    assert {"input.lmdb", "target.lmdb", "subsets.json"} <= {p.name for p in out.iterdir()}
    (src / "HIDE_dataset" / "test" / "test-close-ups" / "2fromGOPR0950.png").unlink()
    for role in ("input", "target"):                     # so that only the leftover check can refuse
        (out / role).rename(tmp_path / f"moved_{role}")
    with pytest.raises(DataError, match="already holds input.lmdb, target.lmdb from an earlier preparation"):
        prepare_hide(src, opts(tmp_path / "out"))
    for role in ("input", "target"):
        (tmp_path / f"moved_{role}").rename(out / role)
    prepare_hide(src, opts(tmp_path / "out", overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == ["input", "subsets.json", "target"]
    assert names(out / "input") == ["1fromGOPR0950", "5fromGOPR1096"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".hidiff-prepare-")]


# ---------------------------------------------------------------- RealBlur
def make_realblur_j(root: Path) -> Path:
    folder = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref"
    lines = {"train": [], "test": []}
    seed = 0
    for s in range(1, 5):
        scene = f"scene{s:03d}"
        for n in (1, 2):
            seed += 1
            write(root / folder / scene / "gt" / f"gt_{n}.png", img(seed))
            write(root / folder / scene / "blur" / f"blur_{n}.png", img(seed + 1000))
            split = "test" if s == 4 else "train"
            lines[split].append(f"{folder}/{scene}/gt/gt_{n}.png {folder}/{scene}/blur/blur_{n}.png")
    for split, ls in lines.items():
        (root / f"RealBlur_J_{split}_list.txt").write_text("\n".join(ls) + "\n")
    return root


def test_realblur_official_lists_and_scene_validation(tmp_path):
    src = make_realblur_j(tmp_path / "RealBlur")
    report = prepare_realblur(tmp_path, opts(tmp_path / "out", val_scenes=1))
    out = tmp_path / "out"
    assert names(out / "RealBlur" / "train" / "RealBlur_J" / "input") == [
        "scene001_1", "scene001_2", "scene002_1", "scene002_2"]
    assert names(out / "RealBlur" / "val" / "RealBlur_J" / "target") == ["scene003_1", "scene003_2"]
    assert names(out / "test" / "RealBlur_J" / "input") == ["scene004_1", "scene004_2"]
    np.testing.assert_array_equal(read_raw(out / "test" / "RealBlur_J" / "input" / "scene004_2.png"),
                                  read_raw(src / "RealBlur-J_ECC_IMCORR_centroid_itensity_ref" / "scene004" /
                                           "blur" / "blur_2.png"))
    text = "\n".join(report.warnings)
    assert "RealBlur_R not found" in text
    assert "RealBlur_J train: found 6 pairs, the official set has 3758" in text


def test_realblur_missing_and_unlisted_files(tmp_path):
    src = make_realblur_j(tmp_path / "RealBlur")
    folder = src / "RealBlur-J_ECC_IMCORR_centroid_itensity_ref"
    (folder / "scene002" / "blur" / "blur_1.png").unlink()
    write(folder / "scene003" / "gt" / "gt_7.png", img(7))
    report = prepare_realblur(src, opts(tmp_path / "out", val_scenes=0))
    text = "\n".join(report.warnings)
    assert "file(s) listed in RealBlur_J_train_list.txt but missing" in text and "scene002/blur/blur_1.png" in text
    assert "image(s) listed in neither split list" in text and "scene003/gt/gt_7.png" in text
    with pytest.raises(DataError, match="--strict"):
        prepare_realblur(src, opts(tmp_path / "out2", strict=True))


def test_realblur_readme_layout_and_official_test_val(tmp_path):
    for split, keys in (("train", ["scene010_1", "scene011_1"]), ("test", ["scene050_1"])):
        for i, k in enumerate(keys):
            write(tmp_path / "RealBlur_R" / split / "input" / f"{k}.png", img(i))
            write(tmp_path / "RealBlur_R" / split / "target" / f"{k}.png", img(i + 9))
    report = prepare_realblur(tmp_path, opts(tmp_path / "out", official_test_val=True))
    assert any("leaks the benchmark" in w for w in report.warnings)
    out = tmp_path / "out"
    assert names(out / "RealBlur" / "train" / "RealBlur_R" / "input") == ["scene010_1", "scene011_1"]
    assert names(out / "RealBlur" / "val" / "RealBlur_R" / "input") == ["scene050_1"]  # = the test set
    with pytest.raises(DataError, match="layout not recognised"):
        prepare_realblur(tmp_path / "out" / "reports", opts(tmp_path / "out3"))


def test_realblur_validation_set_not_written_again_is_removed_with_overwrite(tmp_path):
    """An earlier `--official-test-val` run left the test set as RealBlur/val; a run with `--val-scenes 0`
    must not leave it there to be read as a validation set."""
    for split, keys in (("train", ["scene010_1", "scene011_1"]), ("test", ["scene050_1"])):
        for i, k in enumerate(keys):
            write(tmp_path / "RealBlur_R" / split / "input" / f"{k}.png", img(i))
            write(tmp_path / "RealBlur_R" / split / "target" / f"{k}.png", img(i + 9))
    out = tmp_path / "out"
    prepare_realblur(tmp_path, opts(out, official_test_val=True))
    val = out / "RealBlur" / "val" / "RealBlur_R"
    with pytest.raises(DataError, match="RealBlur_R' holds a set from an earlier preparation"):
        prepare_realblur(tmp_path, opts(out, val_scenes=0))
    assert names(val / "input") == ["scene050_1"]
    prepare_realblur(tmp_path, opts(out, val_scenes=0, overwrite=True))
    assert not val.exists()
    assert names(out / "RealBlur" / "train" / "RealBlur_R" / "input") == ["scene010_1", "scene011_1"]


# ---------------------------------------------------------------- DPDD
DPDD_TEST = ["img2", "img10", "img1", "img3"]


def make_dpdd(root: Path) -> Path:
    base = root / "dd_dp_dataset_png"
    seed = 0
    for split, keys in (("train", ["t1", "t2"]), ("val", ["v1"]), ("test", DPDD_TEST)):
        for k in keys:
            seed += 1
            write(base / f"{split}_c" / "source" / f"{k}.png", img(seed, dtype=np.uint16))
            write(base / f"{split}_c" / "target" / f"{k}.png", img(seed + 100, dtype=np.uint16))
            write(base / f"{split}_l" / "source" / f"{k}_L.png", img(seed + 200, dtype=np.uint16))
            write(base / f"{split}_r" / "source" / f"{k}_R.png", img(seed + 300, dtype=np.uint16))
    np.save(base / "indoor_labels.npy", np.array([1, 3]))   # natural order: img1, img2, img3, img10
    np.save(base / "outdoor_labels.npy", np.array([2, 4]))
    return root


def test_dpdd_official_layout(tmp_path):
    src = make_dpdd(tmp_path / "src")
    report = prepare_dpdd(src, opts(tmp_path / "out"))
    d = tmp_path / "out" / "DPDD"
    for split, n in (("train", 2), ("val", 1), ("test", 4)):
        for role in ("inputC", "inputL", "inputR", "target"):
            assert len(names(d / split / role)) == n
    assert names(d / "test" / "inputL") == sorted(DPDD_TEST)  # '_L' suffix dropped
    left = read_raw(d / "test" / "inputL" / "img10.png")
    assert left.dtype == np.uint16
    np.testing.assert_array_equal(left, read_raw(src / "dd_dp_dataset_png" / "test_l" / "source" / "img10_L.png"))
    assert (d / "test" / "indoor_labels.npy").is_file() and (d / "test" / "outdoor_labels.npy").is_file()
    assert "DPDD test: found 4 pairs, the official set has 76" in report.warnings


def test_dpdd_missing_view_and_labels(tmp_path):
    src = make_dpdd(tmp_path / "src")
    (src / "dd_dp_dataset_png" / "test_r" / "source" / "img3_R.png").unlink()
    for f in ("indoor_labels.npy", "outdoor_labels.npy"):
        (src / "dd_dp_dataset_png" / f).unlink()
    report = prepare_dpdd(src, opts(tmp_path / "out"))
    text = "\n".join(report.warnings)
    assert "target file(s) without inputR" in text and "img3.png" in text
    assert "no indoor_labels/outdoor_labels" in text
    assert names(tmp_path / "out" / "DPDD" / "test" / "inputR") == ["img1", "img10", "img2"]
