"""DualPixelDataset (DPDD): 6-channel views in either order, 16-bit values, indoor/outdoor split."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hidiff.data.dual_pixel_dataset import DualPixelDataset
from hidiff.errors import ConfigError, DataError

KEYS = ["img2", "img10", "img1", "img3"]


def rgb16(seed, h=16, w=20):
    return np.random.default_rng(seed).integers(0, 65536, (h, w, 3), dtype=np.uint16)


@pytest.fixture
def dpdd(tmp_path) -> Path:
    for split, keys in (("train", ["a", "b"]), ("test", KEYS)):
        for i, k in enumerate(keys):
            for j, role in enumerate(("inputC", "inputL", "inputR", "target")):
                folder = tmp_path / split / role
                folder.mkdir(parents=True, exist_ok=True)
                suffix = {"inputL": "_L", "inputR": "_R"}.get(role, "") if split == "train" else ""
                cv2.imwrite(str(folder / f"{k}{suffix}.png"), rgb16(100 * i + j))
    return tmp_path


def as_rgb_float(arr16):
    return torch.from_numpy(arr16[:, :, ::-1].astype(np.float32) / 65535).permute(2, 0, 1)


def test_views_order_and_16bit_values(dpdd):
    ds = DualPixelDataset(str(dpdd), "test")
    assert ds.keys == sorted(KEYS) and len(ds) == 4
    item = ds[ds.keys.index("img2")]
    i = KEYS.index("img2")
    assert item["lq"].shape == (6, 16, 20) and item["gt"].shape == (3, 16, 20)
    torch.testing.assert_close(item["lq"][:3], as_rgb_float(rgb16(100 * i + 1)), rtol=0, atol=0)  # L
    torch.testing.assert_close(item["lq"][3:], as_rgb_float(rgb16(100 * i + 2)), rtol=0, atol=0)  # R
    torch.testing.assert_close(item["gt"], as_rgb_float(rgb16(100 * i + 3)), rtol=0, atol=0)
    rl = DualPixelDataset(str(dpdd), "test", view_order="RL")[ds.keys.index("img2")]
    assert torch.equal(rl["lq"][:3], item["lq"][3:]) and torch.equal(rl["lq"][3:], item["lq"][:3])
    single = DualPixelDataset(str(dpdd), "test", dual_pixel=False)[ds.keys.index("img2")]
    torch.testing.assert_close(single["lq"], as_rgb_float(rgb16(100 * i)), rtol=0, atol=0)  # inputC


def test_training_crops_suffixed_views_and_determinism(dpdd):
    ds = DualPixelDataset(str(dpdd), "train", gt_size=8, seed=4)
    a, b = ds[(1, 5)], ds[(1, 5)]
    assert a["lq"].shape == (6, 8, 8) and torch.equal(a["lq"], b["lq"]) and a["key"] == "b"
    assert a["lq_path"].endswith("inputL/b_L.png")
    assert not torch.equal(a["lq"], ds[(1, 6)]["lq"])
    split_root = DualPixelDataset(str(dpdd / "train"), "train", gt_size=8, seed=4)  # a split folder directly
    assert torch.equal(split_root[(1, 5)]["lq"], a["lq"])


def test_augmentation_transforms_the_views_alike_and_never_swaps_them(dpdd):
    """docs/quirks.md S12 (reproduced for parity): a flip or rotation is applied to L, R and the target alike,
    and L stays first even under a horizontal flip (which mirrors the disparity direction)."""
    views = {role: as_rgb_float(rgb16(j)) for j, role in enumerate(("inputC", "inputL", "inputR", "target"))}
    ds = DualPixelDataset(str(dpdd), "train", gt_size=16, seed=3)

    def dihedral(x, k, flip):
        return torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))

    used = set()
    for draw in range(24):
        item = ds[(0, draw)]  # key 'a': the seeds 0..3 above
        found = [(k, flip) for k in range(4) for flip in (False, True) for left in range(5)
                 if torch.equal(item["lq"][:3], dihedral(views["inputL"][:, :, left:left + 16], k, flip))
                 and torch.equal(item["lq"][3:], dihedral(views["inputR"][:, :, left:left + 16], k, flip))
                 and torch.equal(item["gt"], dihedral(views["target"][:, :, left:left + 16], k, flip))]
        assert found, f"draw {draw}: the views were not transformed alike, or were swapped"
        used.add(found[0])
    assert len(used) >= 6 and any(flip for _, flip in used), used  # mirrored crops: L still first


def test_indoor_outdoor_from_label_files(dpdd):
    np.save(dpdd / "test" / "indoor_labels.npy", np.array([1, 4]))  # natural order: img1 img2 img3 img10
    np.save(dpdd / "test" / "outdoor_labels.npy", np.array([2, 3]))
    ds = DualPixelDataset(str(dpdd), "test")
    assert ds.scenes() == {"img1": "indoor", "img10": "indoor", "img2": "outdoor", "img3": "outdoor"}
    assert ds.scene_of("img10") == "indoor"
    with pytest.raises(DataError, match="unknown image key"):
        ds.scene_of("nope")


def test_label_problems_and_json_labels(dpdd, tmp_path):
    with pytest.raises(DataError, match="no indoor/outdoor labels found.*indoor_labels.npy"):
        DualPixelDataset(str(dpdd), "test").scene_of("img1")
    (dpdd / "test" / "indoor_labels.txt").write_text("1 2\n")
    (dpdd / "test" / "outdoor_labels.txt").write_text("3\n")
    with pytest.raises(DataError, match="1 test image\\(s\\) have no indoor/outdoor label.*img10"):
        DualPixelDataset(str(dpdd), "test").scenes()
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"img1": "indoor", "img2": "indoor", "img3": "outdoor", "img10": "outdoor"}))
    ds = DualPixelDataset(str(dpdd), "test", scene_labels=str(labels))
    assert ds.scene_of("img10") == "outdoor"


def test_layout_errors(dpdd):
    (dpdd / "test" / "inputR" / "img3.png").unlink()
    with pytest.raises(DataError, match=r"DPDD.*phase test.*1 target image\(s\).*no input.*img3"):
        DualPixelDataset(str(dpdd), "test")
    DualPixelDataset(str(dpdd), "test", dual_pixel=False)  # inputC alone is complete
    with pytest.raises(DataError, match="expected <dataroot>/{train,val,test}"):
        DualPixelDataset(str(dpdd), "val")
    with pytest.raises(ConfigError, match="view_order"):
        DualPixelDataset(str(dpdd), "train", view_order="LL")


def test_two_targets_of_one_stem_are_refused(dpdd):
    """target/ holding k.png and k.tif: one was used silently; the views already refused the same clash."""
    cv2.imwrite(str(dpdd / "test" / "target" / "img1.tif"), rgb16(7))
    with pytest.raises(DataError, match=r"target' holds two files for the stem 'img1': 'img1.png' and 'img1.tif'"):
        DualPixelDataset(str(dpdd), "test")
