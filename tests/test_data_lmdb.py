"""LMDB stores: BasicSR meta_info format, and reading them equals reading the folders bitwise."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch

from hidiff.data.lmdb_io import read_meta_info, write_lmdb
from hidiff.data.loader import build_dataloader
from hidiff.data.paired_dataset import PairedImageDataset
from hidiff.errors import ConfigError, DataError


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(1)
    lq, gt = tmp_path / "input", tmp_path / "target"
    lq.mkdir()
    gt.mkdir()
    for i in range(5):
        h, w = 20 + i, 30 - i
        cv2.imwrite(str(gt / f"img{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        cv2.imwrite(str(lq / f"img{i}.jpg"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))  # lossy source
    cv2.imwrite(str(gt / "img5.png"), rng.integers(0, 65536, (18, 18, 3), dtype=np.uint16))  # 16-bit
    cv2.imwrite(str(lq / "img5.png"), rng.integers(0, 256, (18, 18), dtype=np.uint8))  # gray
    return lq, gt


def test_meta_info_format(folders, tmp_path):
    lq, _ = folders
    n = write_lmdb(lq, tmp_path / "input.lmdb", compress_level=3)
    assert n == 6
    lines = (tmp_path / "input.lmdb" / "meta_info.txt").read_text().splitlines()
    assert lines[0] == "img0.png (20,30,3) 3"
    assert lines[5] == "img5.png (18,18,1) 3"
    assert all(re.fullmatch(r"\S+\.png \(\d+,\d+,\d\) 3", line) for line in lines)
    assert [name for name, _ in read_meta_info(tmp_path / "input.lmdb")][:2] == ["img0.png", "img1.png"]
    assert {p.name for p in (tmp_path / "input.lmdb").iterdir()} >= {"data.mdb", "meta_info.txt"}


def test_map_grows_when_full(folders, tmp_path):
    lq, _ = folders
    assert write_lmdb(lq, tmp_path / "small.lmdb", map_size=4096, batch=2) == 6  # far too small at first
    db = PairedImageDataset(str(tmp_path / "small.lmdb"), str(tmp_path / "small.lmdb"), "val", io_backend="lmdb")
    disk = PairedImageDataset(str(lq), str(lq), "val")
    assert all(torch.equal(db[i]["lq"], disk[i]["lq"]) for i in range(6))


def test_lmdb_round_trip_equals_folder_bitwise(folders, tmp_path):
    lq, gt = folders
    write_lmdb(lq, tmp_path / "input.lmdb")
    write_lmdb(gt, tmp_path / "target.lmdb")
    for phase, kw in (("val", {}), ("train", {"gt_size": 12, "seed": 3})):
        disk = PairedImageDataset(str(lq), str(gt), phase, **kw)
        db = PairedImageDataset(str(tmp_path / "input.lmdb"), str(tmp_path / "target.lmdb"), phase,
                                io_backend="lmdb", **kw)
        assert disk.keys == db.keys == [f"img{i}" for i in range(6)]
        for i in range(6):
            a, b = disk[(i, 7)], db[(i, 7)]
            assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"]) and a["key"] == b["key"]


def test_lmdb_through_worker_processes(folders, tmp_path):
    lq, gt = folders
    write_lmdb(lq, tmp_path / "input.lmdb")
    write_lmdb(gt, tmp_path / "target.lmdb")
    db = PairedImageDataset(str(tmp_path / "input.lmdb"), str(tmp_path / "target.lmdb"), "train",
                            io_backend={"type": "lmdb"}, gt_size=12)
    db[0]  # open the environment in the parent first: workers must reopen their own
    disk = PairedImageDataset(str(lq), str(gt), "train", gt_size=12)
    a = [b["gt"] for b in build_dataloader(db, phase="train", batch_size=2, num_workers=2, seed=0)]
    b = [b["gt"] for b in build_dataloader(disk, phase="train", batch_size=2, num_workers=0, seed=0)]
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b))


def test_lmdb_errors(folders, tmp_path):
    lq, gt = folders
    write_lmdb(gt, tmp_path / "target.lmdb")
    with pytest.raises(ConfigError, match="is an LMDB store; set io_backend: lmdb"):
        PairedImageDataset(str(lq), str(tmp_path / "target.lmdb"), "val")
    with pytest.raises(DataError, match="no meta_info.txt"):
        PairedImageDataset(str(lq), str(gt), "val", io_backend="lmdb")
    (tmp_path / "target.lmdb" / "meta_info.txt").write_text("garbage line\n")
    with pytest.raises(DataError, match=r"meta_info.txt:1: expected"):
        read_meta_info(tmp_path / "target.lmdb")


def test_basicsr_keys_with_a_folder_part_are_read(tmp_path):
    """REDS-style keys '000/00000000' were cut to '00000000': 'listed twice' for two clips, or missing."""
    import lmdb

    rng = np.random.default_rng(0)
    images = {}
    for side in ("lq", "gt"):
        root = tmp_path / f"{side}.lmdb"
        root.mkdir()
        env = lmdb.open(str(root), map_size=1 << 24)
        lines = []
        with env.begin(write=True) as txn:
            for key in ("000/00000000", "001/00000000"):
                img = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
                images[side, key] = img
                txn.put(key.encode(), cv2.imencode(".png", img)[1].tobytes())
                lines.append(f"{key}.png (8,8,3) 1")
        env.close()
        (root / "meta_info.txt").write_text("\n".join(lines) + "\n")
    ds = PairedImageDataset(str(tmp_path / "lq.lmdb"), str(tmp_path / "gt.lmdb"), phase="test", io_backend="lmdb")
    assert ds.keys == ["000/00000000", "001/00000000"]
    item = ds[1]
    assert item["key"] == "001/00000000"
    expected = torch.from_numpy(images["gt", "001/00000000"][:, :, ::-1].astype(np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(item["gt"], expected)
