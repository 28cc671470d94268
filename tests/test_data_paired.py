"""PairedImageDataset: pairing by stem, crops/augmentation, determinism, errors, corrupt images."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hidiff.data.paired_dataset import PairedImageDataset
from hidiff.data.transforms import dihedral
from hidiff.errors import ConfigError, DataError
from hidiff.registry import DATASET_REGISTRY
from hidiff.utils.kwargs import build_from_registry


def make_pairs(root, names, h=40, w=48, seed=0):
    rng = np.random.default_rng(seed)
    (root / "lq").mkdir(parents=True, exist_ok=True)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    for n in names:
        gt = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "gt" / n), gt)
        cv2.imwrite(str(root / "lq" / n), 255 - gt)  # lq + gt == 1 pixel-wise: shows shared geometry
    return root / "lq", root / "gt"


def test_registered_under_both_names_and_buildable(tmp_path):
    lq, gt = make_pairs(tmp_path, ["a.png"])
    assert DATASET_REGISTRY.get("PairedImageIRDataset") is PairedImageDataset
    ds = build_from_registry(DATASET_REGISTRY, {"type": "PairedImageIRDataset", "dataroot_lq": str(lq),
                                                "dataroot_gt": str(gt), "io_backend": {"type": "disk"}},
                             "datasets.val", phase="val")
    assert len(ds) == 1
    with pytest.raises(ConfigError, match="gt_sise.*did you mean 'gt_size'"):
        build_from_registry(DATASET_REGISTRY, {"type": "PairedImageDataset", "dataroot_lq": str(lq),
                                               "dataroot_gt": str(gt), "gt_sise": 8}, "datasets.train",
                            phase="train")


def test_pairs_sorted_by_key_and_item_contract(tmp_path):
    lq, gt = make_pairs(tmp_path, ["c.png", "a.png", "b.png"])
    ds = PairedImageDataset(str(lq), str(gt), "val")
    assert ds.keys == ["a", "b", "c"]
    item = ds[1]
    assert set(item) == {"lq", "gt", "lq_path", "gt_path", "key"}
    assert item["key"] == "b" and item["lq_path"].endswith("lq/b.png") and item["gt_path"].endswith("gt/b.png")
    assert item["lq"].dtype == torch.float32 and item["lq"].shape == (3, 40, 48)
    assert float(item["lq"].min()) >= 0 and float(item["lq"].max()) <= 1
    torch.testing.assert_close(item["lq"] + item["gt"], torch.ones_like(item["gt"]))


def test_unmatched_files_are_named_with_dataset_and_phase(tmp_path):
    lq, gt = make_pairs(tmp_path, ["a.png", "b.png", "c.png"])
    (lq / "b.png").unlink()
    cv2.imwrite(str(lq / "zz_extra.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError) as err:
        PairedImageDataset(str(lq), str(gt), "val", name="GoPro_val")
    msg = str(err.value)
    assert "GoPro_val" in msg and "phase val" in msg
    assert "have no input" in msg and " b" in msg and "zz_extra" in msg


def test_filename_template(tmp_path):
    lq, gt = make_pairs(tmp_path, ["a.png"])
    (lq / "a.png").rename(lq / "a_blur.png")
    ds = PairedImageDataset(str(lq), str(gt), "test", filename_tmpl="{}_blur")
    assert ds[0]["lq_path"].endswith("a_blur.png")


def test_val_size_mismatch_names_both_files(tmp_path):
    lq, gt = make_pairs(tmp_path, ["a.png"])
    cv2.imwrite(str(lq / "a.png"), np.zeros((40, 40, 3), np.uint8))
    ds = PairedImageDataset(str(lq), str(gt), "val")
    with pytest.raises(DataError, match=r"lq/a\.png' is 40x40 but target '.*gt/a\.png' is 40x48"):
        ds[0]


def test_training_determinism_and_shared_geometry(tmp_path):
    lq, gt = make_pairs(tmp_path, ["a.png", "b.png"])
    ds = PairedImageDataset(str(lq), str(gt), "train", gt_size=16, seed=5)
    one, two = ds[(1, 3)], ds[(1, 3)]
    assert torch.equal(one["lq"], two["lq"]) and torch.equal(one["gt"], two["gt"])
    assert one["lq"].shape == (3, 16, 16)
    torch.testing.assert_close(one["lq"] + one["gt"], torch.ones_like(one["gt"]))
    assert torch.equal(ds[1]["gt"], ds[(1, 0)]["gt"])  # an int index is token 0
    assert not torch.equal(ds[(1, 3)]["gt"], ds[(1, 4)]["gt"])  # another epoch, another crop
    other_seed = PairedImageDataset(str(lq), str(gt), "train", gt_size=16, seed=6)
    assert not torch.equal(other_seed[(1, 3)]["gt"], one["gt"])
    # an enlarged index (from dataset_enlarge_ratio) wraps to the item but keeps its own randomness
    assert ds[(3, 0)]["key"] == "b" and not torch.equal(ds[(3, 0)]["gt"], ds[(1, 0)]["gt"])


def test_crops_and_all_eight_dihedral_transforms_are_drawn(tmp_path):
    h, w, s = 24, 32, 8
    pos = (np.arange(h * w, dtype=np.uint16).reshape(h, w) + 1)  # unique value per pixel
    for folder in ("lq", "gt"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "p.png"), pos)
    ds = PairedImageDataset(str(tmp_path / "lq"), str(tmp_path / "gt"), "train", gt_size=s, seed=0)
    modes, corners = [], set()
    ref = torch.from_numpy(pos.astype(np.int64))
    for i in range(400):
        out = torch.round(ds[(0, i)]["gt"][0] * 65535).to(torch.int64)
        first = int(out.min()) - 1
        top, left = divmod(first, w)
        corners.add((top, left))
        block = ref[top:top + s, left:left + s]
        # the 8 symmetries of the square, built with torch (independent of the numpy code under test)
        cands = [torch.rot90(block, k, (0, 1)) for k in range(4)]
        cands += [torch.flip(c, (0,)) for c in cands]
        match = [j for j, c in enumerate(cands) if torch.equal(c, out)]
        assert len(match) == 1
        modes.append(match[0])
    counts = np.bincount(modes, minlength=8)
    assert (counts > 25).all() and (counts < 80).all(), counts  # uniform over 8, expected 50 each
    assert len(corners) > 100  # crop positions vary over the (h-s+1)(w-s+1)=425 possibilities
    assert max(t for t, _ in corners) == h - s and max(c for _, c in corners) == w - s


def test_dihedral_modes_match_the_official_order():
    x = np.arange(6).reshape(2, 3)
    expect = [x, np.flipud(x), np.rot90(x), np.flipud(np.rot90(x)), np.rot90(x, 2), np.flipud(np.rot90(x, 2)),
              np.rot90(x, 3), np.flipud(np.rot90(x, 3))]
    for mode, e in enumerate(expect):
        np.testing.assert_array_equal(dihedral(x, mode), e)


def test_no_augmentation_keeps_orientation(tmp_path):
    lq, gt = make_pairs(tmp_path, ["a.png"], h=16, w=16)
    ds = PairedImageDataset(str(lq), str(gt), "train", gt_size=16, geometric_augs=False)
    full = PairedImageDataset(str(lq), str(gt), "val")[0]
    for i in range(5):
        assert torch.equal(ds[(0, i)]["gt"], full["gt"])


def test_crop_larger_than_image_is_a_clear_error(tmp_path):
    lq, gt = make_pairs(tmp_path, ["a.png"], h=10, w=12)
    ds = PairedImageDataset(str(lq), str(gt), "train", gt_size=16)
    with pytest.raises(DataError, match=r"gt/a\.png.*10x12.*smaller than the crop size 16"):
        ds[0]


def test_corrupt_training_image_error_and_skip(tmp_path):
    lq, gt = make_pairs(tmp_path, ["a.png", "b.png", "c.png"])
    (gt / "b.png").write_bytes((gt / "b.png").read_bytes()[:100])
    strict = PairedImageDataset(str(lq), str(gt), "train", gt_size=8)
    with pytest.raises(DataError, match=r"gt/b\.png'.*truncated"):
        strict[1]
    lenient = PairedImageDataset(str(lq), str(gt), "train", gt_size=8, skip_corrupt=True)
    first = lenient[(1, 2)]
    assert first["key"] == "c" and lenient.num_skipped == 1
    assert torch.equal(lenient[(1, 2)]["gt"], first["gt"]) and lenient.num_skipped == 2
    assert lenient[0]["key"] == "a" and lenient.num_skipped == 2
    val = PairedImageDataset(str(lq), str(gt), "val", skip_corrupt=True)
    with pytest.raises(DataError, match=r"b\.png"):  # never replaced outside training
        val[1]


def test_bad_options(tmp_path):
    lq, gt = make_pairs(tmp_path, ["a.png"])
    with pytest.raises(ConfigError, match="phase"):
        PairedImageDataset(str(lq), str(gt), "training")
    with pytest.raises(ConfigError, match="io_backend"):
        PairedImageDataset(str(lq), str(gt), "val", io_backend="memcached")
    with pytest.raises(DataError, match="dataroot_lq.*does not exist"):
        PairedImageDataset(str(tmp_path / "nope"), str(gt), "val")
    with pytest.raises(ConfigError, match="gt_size"):
        PairedImageDataset(str(lq), str(gt), "train", gt_size=0)
