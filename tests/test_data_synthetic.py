"""SyntheticBlurDataset and the frozen synthetic set (scripts/make_synthetic.py)."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage
import torch

from conftest import run_env
from hidiff.data.blur_kernels import convolve_valid
from hidiff.data.image_io import read_image_uint8
from hidiff.data.synthetic_dataset import SyntheticBlurDataset
from hidiff.data.synthetic_set import freeze_synthetic_set
from hidiff.errors import ConfigError, DataError
from procs import run_checked

REPO = Path(__file__).resolve().parents[1]
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(SKIMAGE_DATA / name, root / name)
    return root


def test_training_items_deterministic_per_index_and_epoch(photos):
    ds = SyntheticBlurDataset(str(photos), "train", gt_size=48, seed=1, length=10, return_kernel=True)
    assert len(ds) == 10
    a, b = ds[(4, 2)], ds[(4, 2)]
    assert a["key"] == "chelsea"  # index 4 -> photo 4 % 3 = 1 (sorted stems)
    assert a["lq"].shape == a["gt"].shape == (3, 48, 48)
    assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"]) and torch.equal(a["kernel"], b["kernel"])
    c = ds[(4, 3)]
    assert not torch.equal(a["gt"], c["gt"]) and not torch.equal(a["kernel"], c["kernel"])
    assert not torch.equal(ds[(1, 2)]["kernel"], a["kernel"])  # same photo, another index: another blur
    assert float(a["kernel"].sum()) == pytest.approx(1.0, abs=1e-5)


def test_photos_are_decoded_once_per_process_and_the_cache_changes_no_item(photos, monkeypatch):
    import hidiff.data.synthetic_dataset as sd

    decoded = []
    real = sd.read_raw
    monkeypatch.setattr(sd, "read_raw", lambda path: decoded.append(path.name) or real(path))
    kw = dict(gt_size=48, seed=3, length=9, return_kernel=True)
    cached = SyntheticBlurDataset(str(photos), "train", **kw)
    items = [cached[(i, 1)] for i in range(9)]
    assert sorted(decoded) == sorted(PHOTOS)  # 9 items, 3 photos: each decoded once
    monkeypatch.setattr(sd, "PHOTO_CACHE_BYTES", 0)  # nothing fits: every item decodes its photo
    uncached = SyntheticBlurDataset(str(photos), "train", **kw)
    decoded.clear()
    for i, item in enumerate(items):
        again = uncached[(i, 1)]
        assert all(torch.equal(item[k], again[k]) for k in ("lq", "gt", "kernel")), i
    assert len(decoded) == 9 and not uncached._photos
    val = SyntheticBlurDataset(str(photos), "val", gt_size=48, seed=3)
    first = val[0]["gt"]
    assert torch.equal(val[0]["gt"], first)


def test_returned_kernel_is_the_psf_of_the_transformed_pair(photos):
    ds = SyntheticBlurDataset(str(photos), "train", gt_size=40, kernel_size=9, noise_sigma=0.0, seed=0,
                              return_kernel=True)
    for index in range(6):
        item = ds[(index, 0)]
        gt = item["gt"].permute(1, 2, 0).double().numpy()
        k = item["kernel"].double().numpy()
        pred = convolve_valid(gt, k)  # valid part only: the pair's own border region is unknown here
        lq = item["lq"].permute(1, 2, 0).double().numpy()[4:-4, 4:-4]
        assert np.abs(pred - lq).max() <= 0.5 / 255 + 1e-4


def test_val_items_fixed_size_and_keyed(photos):
    full = SyntheticBlurDataset(str(photos), "test", kernel_size=31, seed=3)
    item = full[0]
    assert item["key"] == "astronaut" and item["gt"].shape == (3, 512 - 30, 512 - 30)
    assert torch.equal(item["lq"], full[0]["lq"])
    crop = SyntheticBlurDataset(str(photos), "val", gt_size=64, seed=3, length=2)
    assert len(crop) == 2 and all(crop[i]["gt"].shape == (3, 64, 64) for i in range(2))
    with pytest.raises(IndexError):
        crop[2]


def test_bad_options(photos, tmp_path):
    with pytest.raises(ConfigError, match="gt_size is required"):
        SyntheticBlurDataset(str(photos), "train")
    with pytest.raises(ConfigError, match="odd"):
        SyntheticBlurDataset(str(photos), "val", kernel_size=30)
    with pytest.raises(ConfigError, match="noise_sigma"):
        SyntheticBlurDataset(str(photos), "val", noise_sigma=(0.1, 0.0))
    with pytest.raises(DataError, match="no images"):
        SyntheticBlurDataset(str(tmp_path), "val")
    small = SyntheticBlurDataset(str(photos), "val", gt_size=600)
    with pytest.raises(DataError, match="astronaut.png' is 512x512.*needs at least 630x630"):
        small[0]


def run_make(photos, out, *extra):
    cmd = [sys.executable, str(REPO / "scripts" / "make_synthetic.py"), "--sharp", str(photos), "--out", str(out),
           "--crop", "64", "--seed", "7", *extra]
    return run_checked(cmd, env=run_env(), cwd=REPO, timeout=300)


def tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_frozen_set_is_byte_reproducible_and_matches_the_dataset(photos, tmp_path):
    r1 = run_make(photos, tmp_path / "a")
    r2 = run_make(photos, tmp_path / "b")
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a == b
    assert set(a) >= {"manifest.json", "input/coffee.png", "target/coffee.png", "kernels/coffee.npy",
                      "kernels/coffee.png"}
    manifest = json.loads(a["manifest.json"])
    assert manifest["seed"] == 7 and manifest["crop"] == 64 and manifest["kernel_size"] == 31
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256(a[rel]).hexdigest() == digest
    assert {item["key"] for item in manifest["items"]} == {"astronaut", "chelsea", "coffee"}
    k = np.load(tmp_path / "a" / "kernels" / "chelsea.npy")
    assert k.shape == (31, 31) and abs(k.sum() - 1) < 1e-12 and (k >= 0).all()
    ds = SyntheticBlurDataset(str(photos), "test", gt_size=64, seed=7)
    for i, key in enumerate(ds.keys):
        item = ds[i]
        np.testing.assert_array_equal((item["lq"] * 255).round().byte().permute(1, 2, 0).numpy(),
                                      read_image_uint8(tmp_path / "a" / "input" / f"{key}.png"))
        np.testing.assert_array_equal((item["gt"] * 255).round().byte().permute(1, 2, 0).numpy(),
                                      read_image_uint8(tmp_path / "a" / "target" / f"{key}.png"))
    freeze_synthetic_set(photos, tmp_path / "c", seed=8, crop=64, log=lambda _: None)
    assert (tmp_path / "c" / "input" / "coffee.png").read_bytes() != a["input/coffee.png"]
    with pytest.raises(DataError, match="--overwrite"):
        freeze_synthetic_set(photos, tmp_path / "c", seed=8, crop=64, log=lambda _: None)


def test_overwrite_keeps_the_earlier_set_until_every_pair_of_the_new_one_is_made(photos, tmp_path):
    """A photo too small for the crop was found after the earlier set had been deleted; the folder then held
    new images under the old manifest."""
    out = tmp_path / "set"
    freeze_synthetic_set(photos, out, seed=0, crop=64, log=lambda _: None)
    before = tree(out)
    more = tmp_path / "more"
    shutil.copytree(photos, more)
    cv2.imwrite(str(more / "tiny.png"), np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(DataError, match="tiny.png"):
        freeze_synthetic_set(more, out, seed=1, crop=64, overwrite=True, log=lambda _: None)
    assert tree(out) == before and sorted(p.name for p in out.iterdir()) == sorted(
        ["input", "target", "kernels", "manifest.json"])
    (more / "tiny.png").unlink()
    (more / "ATTRIBUTION.md").write_text("photos: CC0\n")
    freeze_synthetic_set(more, out, seed=1, crop=64, overwrite=True, log=lambda _: None)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1 and (out / "ATTRIBUTION.md").is_file()
    assert tree(out)["input/coffee.png"] != before["input/coffee.png"]
    freeze_synthetic_set(photos, out, seed=2, crop=64, overwrite=True, log=lambda _: None)
    assert not (out / "ATTRIBUTION.md").exists()     # the set replaced whole: no other set's attribution stays
    assert not [p for p in out.iterdir() if p.name.startswith(".hidiff-staging-")]


def test_training_photos_too_small_for_a_crop_are_found_from_their_headers(photos, tmp_path):
    more = tmp_path / "more"
    shutil.copytree(photos, more)
    cv2.imwrite(str(more / "tiny.png"), np.zeros((40, 40, 3), np.uint8))
    ds = SyntheticBlurDataset(str(more), "train", gt_size=32, kernel_size=31, seed=0)
    assert ds.size_problems() == [f"photo '{more / 'tiny.png'}' is 40x40, smaller than the crop size 32 plus "
                                  f"the kernel's margin (62)"]
    assert SyntheticBlurDataset(str(photos), "train", gt_size=32, kernel_size=31, seed=0).size_problems() == []
