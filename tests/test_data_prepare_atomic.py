"""All-or-nothing preparation: a failed or refused run leaves --dst byte-identical; a good one moves in whole."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from hidiff.cli.prepare import main as prepare_main
from hidiff.data.prepare import checks, dpdd, placing, staging
from hidiff.data.prepare.dpdd import prepare_dpdd
from hidiff.data.prepare.gopro import prepare_gopro
from hidiff.data.prepare.placing import PrepareOptions
from hidiff.data.prepare.realblur import prepare_realblur
from hidiff.errors import DataError

H, W = 36, 64
TRAIN_SCENES = ["GOPR0001_11_00", "GOPR0002_11_00", "GOPR0003_11_00"]
TEST_SCENES = ["GOPR0101_11_00"]
# everything a default GoPro run of make_gopro writes (crop 32/16: 6 crops per frame)
GOPRO_OUTPUT = {
    "GoPro/train": 4, "GoPro/val": 2, "GoPro/crops/train": 24, "GoPro/crops/val": 2, "test/GoPro": 2}


def frame(seed, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_gopro(root: Path, offset: int = 0) -> Path:
    """A tiny GOPRO_Large tree: 3 training scenes and 1 test scene of 2 frames each."""
    seed = offset
    for split, scenes in (("train", TRAIN_SCENES), ("test", TEST_SCENES)):
        for scene in scenes:
            for f in ("000001", "000002"):
                seed += 1
                for sub in ("blur", "sharp"):
                    path = root / "GOPRO_Large" / split / scene / sub / f"{f}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(path), frame(seed * 10 + len(sub)))
    return root


def make_realblur(root: Path, variant: str) -> Path:
    """A tiny official RealBlur-J/-R archive: scenes 1-3 train, scene 4 test, 2 pairs each."""
    folder = ("RealBlur-J_ECC_IMCORR_centroid_itensity_ref" if variant == "J"
              else "RealBlur-R_BM3D_ECC_IMCORR_centroid_itensity_ref")
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for s in range(1, 5):
        for n in (1, 2):
            for sub in ("gt", "blur"):
                path = root / folder / f"scene{s:03d}" / sub / f"{sub}_{n}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), frame(100 * s + 10 * n + len(sub) + ord(variant), 20, 24))
            lines["test" if s == 4 else "train"].append(
                f"{folder}/scene{s:03d}/gt/gt_{n}.png {folder}/scene{s:03d}/blur/blur_{n}.png")
    for split, ls in lines.items():
        (root / f"RealBlur_{variant}_{split}_list.txt").write_text("\n".join(ls) + "\n")
    return root


def options(dst, **kw):
    kw.setdefault("crop_size", 32)
    kw.setdefault("crop_stride", 16)
    kw.setdefault("val_crop", 16)
    kw.setdefault("val_scenes", 1)
    return PrepareOptions(dst=dst, log=kw.pop("log", lambda _m: None), workers=1, **kw)


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones too): kind plus content hash or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = "file " + hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def counts(dst: Path) -> dict[str, int]:
    return {rel: len(list((dst / rel / "input").iterdir())) for rel in GOPRO_OUTPUT}


def failing_placement(monkeypatch, n: int | None, exc: BaseException) -> list[int]:
    """Make the ``n``-th placed file fail with ``exc`` (the others, all if ``n`` is None, are placed for real)."""
    calls = [0]
    real = placing.place_file

    def place(src, dst, mode):
        calls[0] += 1
        if calls[0] == n:
            if isinstance(exc, OSError):
                raise OSError(exc.errno, exc.strerror, str(dst))  # as the system would, naming the file
            raise exc
        return real(src, dst, mode)

    monkeypatch.setattr(placing, "place_file", place)
    return calls


@pytest.fixture
def prepared(tmp_path):
    """A GoPro source and a previous prepared set (with LMDB stores) made from other images."""
    old_src = make_gopro(tmp_path / "old_src", offset=500)
    dst = tmp_path / "datasets"
    prepare_gopro(old_src, options(dst, lmdb=True))
    return make_gopro(tmp_path / "src"), dst


def test_successful_run_moves_everything_in_and_names_final_paths(tmp_path):
    src, dst = make_gopro(tmp_path / "src"), tmp_path / "datasets"
    logged: list[str] = []
    report = prepare_gopro(src, options(dst, lmdb=True, log=logged.append))
    assert counts(dst) == GOPRO_OUTPUT
    assert sorted(os.listdir(dst)) == ["GoPro", "reports", "test"]  # no staging folder left
    assert sorted(os.listdir(dst / "GoPro" / "crops" / "train")) == ["input", "input.lmdb", "target", "target.lmdb"]
    assert (dst / "GoPro" / "crops" / "val" / "SOURCE.txt").is_file()
    frame_link = dst / "test" / "GoPro" / "target" / f"{TEST_SCENES[0]}-000001.png"
    assert os.path.samefile(frame_link, src / "GOPRO_Large" / "test" / TEST_SCENES[0] / "sharp" / "000001.png")
    saved = json.loads((dst / "reports" / "prepare_gopro.json").read_text())
    assert saved["outputs"] == report.outputs
    assert str(dst / "GoPro" / "crops" / "train" / "input.lmdb") in report.outputs
    assert all(Path(p).exists() for p in report.outputs)
    text = "\n".join(logged) + json.dumps(saved)
    assert staging.PREFIX not in text and f"wrote     24 files -> {dst / 'GoPro' / 'crops' / 'train' / 'input'}" in text
    # a second run with --overwrite over it gives the same tree (hard links: same contents)
    before = tree(dst)
    prepare_gopro(src, options(dst, lmdb=True, overwrite=True))
    after = tree(dst)
    assert {k: v for k, v in after.items() if ".lmdb" not in k} == {k: v for k, v in before.items() if ".lmdb" not in k}


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_failure_midway_with_overwrite_keeps_previous_set(prepared, monkeypatch, exc):
    src, dst = prepared
    before = tree(dst)
    calls = failing_placement(monkeypatch, 9, exc)  # train (8 files) staged, then val fails
    with pytest.raises(type(exc)) as err:
        prepare_gopro(src, options(dst, lmdb=True, overwrite=True))
    assert calls[0] == 9
    assert tree(dst) == before
    if isinstance(exc, OSError):  # the file being written is named by its final path
        final = dst / "GoPro" / "val" / "input" / f"{TRAIN_SCENES[2]}-000001.png"
        assert str(err.value) == f"[Errno {errno.ENOSPC}] No space left on device: '{final}'"


def test_strict_rejects_a_later_variant_after_another_was_staged(tmp_path, monkeypatch):
    for variant in ("J", "R"):
        for split, n in (("train", 6), ("test", 2)):
            monkeypatch.setitem(checks.OFFICIAL_COUNTS, (f"RealBlur_{variant}", split), n)
    src = tmp_path / "RealBlur"
    make_realblur(src, "J")
    make_realblur(src, "R")
    dst = tmp_path / "datasets"
    prepare_realblur(src, options(dst, strict=True))  # a previous, complete set
    bad = src / "RealBlur-R_BM3D_ECC_IMCORR_centroid_itensity_ref" / "scene004" / "blur" / "blur_2.png"
    bad.write_bytes(bad.read_bytes()[:50])
    before = tree(dst)
    placed = failing_placement(monkeypatch, None, RuntimeError())  # only counts placements
    with pytest.raises(DataError, match=r"RealBlur_R test: 1 problem\(s\) \(--strict\)") as err:
        prepare_realblur(src, options(dst, strict=True, overwrite=True))
    assert placed[0] == 16  # RealBlur_J was staged whole before RealBlur_R was checked
    assert str(bad) in str(err.value)
    assert tree(dst) == before


def test_failure_on_a_fresh_destination_leaves_nothing(tmp_path, monkeypatch):
    src = make_gopro(tmp_path / "src")
    dst = tmp_path / "new" / "datasets"
    failing_placement(monkeypatch, 11, OSError(errno.EIO, "Input/output error"))
    with pytest.raises(OSError):
        prepare_gopro(src, options(dst))
    assert not (tmp_path / "new").exists()


def test_failure_while_moving_into_place_rolls_back(prepared, monkeypatch):
    src, dst = prepared
    before = tree(dst)
    real_rename = os.rename
    renames = [0]

    def rename(a, b):
        renames[0] += 1
        if renames[0] == 7:  # some outputs are already in place, old ones set aside
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(a, b)

    monkeypatch.setattr(staging.os, "rename", rename)
    with pytest.raises(OSError, match="cross-device"):
        prepare_gopro(src, options(dst, lmdb=True, overwrite=True))
    monkeypatch.undo()
    assert tree(dst) == before


def test_refused_run_changes_nothing_and_does_no_work(prepared, tmp_path):
    src, dst = prepared
    stale = dst / f"{staging.PREFIX}99999999"  # beyond any pid_max: no such process
    (stale / "new").mkdir(parents=True)
    before = tree(dst)
    logged: list[str] = []
    with pytest.raises(DataError, match=f"output folder '{dst / 'GoPro' / 'train' / 'input'}' already exists "
                                        f"and is not empty; pass --overwrite"):
        prepare_gopro(src, options(dst, log=logged.append))
    assert not any("decoding" in m for m in logged)  # refused before any image was read
    assert tree(dst) == before
    # an output path taken by a file is refused even with --overwrite
    other = tmp_path / "other"
    (other / "test" / "GoPro").mkdir(parents=True)
    (other / "test" / "GoPro" / "input").write_text("not a folder")
    before = tree(other)
    with pytest.raises(DataError, match="exists and is not a folder"):
        prepare_gopro(src, options(other, overwrite=True))
    assert tree(other) == before


def test_stale_staging_folder_is_removed_and_a_live_one_kept(tmp_path):
    src, dst = make_gopro(tmp_path / "src"), tmp_path / "datasets"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = dst / f"{staging.PREFIX}{int(dead.stdout)}"
    (stale / "new" / "GoPro" / "train" / "input").mkdir(parents=True)
    (stale / "new" / "GoPro" / "train" / "input" / "half.png").write_bytes(b"\x89PNG")
    live = dst / f"{staging.PREFIX}{os.getppid()}"
    live.mkdir()
    prepare_gopro(src, options(dst))
    assert not stale.exists() and live.is_dir()
    assert counts(dst) == GOPRO_OUTPUT


def test_a_live_run_in_another_pid_namespace_keeps_its_staging_folder(tmp_path):
    """A staging folder was judged by its PID alone: a run on another host or in another container (whose PID
    means nothing here, or is this run's own) lost its folder to a second run and then committed part of its
    output as if it were whole. A folder is now removed only when nobody holds its lock."""
    src, dst = make_gopro(tmp_path / "src"), tmp_path / "datasets"
    other = dst / f"{staging.PREFIX}{os.getpid()}-0badcafe"  # looks like ours, or like a dead PID's
    (other / "new").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); "
        "print('locked', flush=True); sys.stdin.read()"), str(other)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        prepare_gopro(src, options(dst))
        assert other.is_dir(), "a live run's staging folder was removed"
    finally:
        holder.communicate("")
    prepare_gopro(src, options(dst, overwrite=True))  # its holder is gone: a leftover now
    assert not other.exists()
    assert not [p for p in dst.iterdir() if p.name.startswith(staging.PREFIX)]


def test_outputs_set_aside_by_a_run_killed_while_committing_are_never_deleted(prepared):
    """A run killed between setting an old output aside and moving its new one in left the only copy of the old
    one in its staging folder, which the next run deleted as a leftover."""
    src, dst = prepared
    killed = dst / f"{staging.PREFIX}12345-deadbeef"
    aside = killed / "old" / "GoPro" / "train" / "input"
    (dst / "GoPro" / "train" / "input").rename(aside.parent.mkdir(parents=True) or aside)
    before = tree(dst)
    with pytest.raises(DataError, match="killed while moving its own into place"):
        prepare_gopro(src, options(dst, overwrite=True))
    assert tree(dst) == before


def test_a_staging_folder_removed_midway_commits_nothing(prepared, monkeypatch):
    """Writes recreate missing folders (crops, notes and reports go through atomic writes), so a run whose
    staging folder another process removed used to finish 'successfully' and move a part of its outputs into
    place. Here the folder is removed, and one output written again, just before the commit."""
    src, dst = prepared
    before = tree(dst)
    real = staging.Staging.commit

    def commit(self):
        shutil.rmtree(self.root)
        kept = next(iter(self.folders.values()))
        kept.mkdir(parents=True)
        (kept / "late.png").write_bytes(b"\x89PNG")
        return real(self)

    monkeypatch.setattr(staging.Staging, "commit", commit)
    with pytest.raises(DataError, match="was removed while this run wrote into it"):
        prepare_gopro(src, options(dst, overwrite=True, lmdb=True))
    assert tree(dst) == before


def test_an_output_folder_on_another_file_system_is_refused_before_any_work(tmp_path, monkeypatch):
    """datasets/test -> another disk: every image was placed, then the final rename failed (EXDEV) with a raw
    OSError naming the staging folder."""
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary folder")
    src, dst = make_gopro(tmp_path / "src"), tmp_path / "datasets"
    dst.mkdir()
    elsewhere = Path(tempfile.mkdtemp(dir=other))
    try:
        (dst / "test").symlink_to(elsewhere, target_is_directory=True)
        calls = failing_placement(monkeypatch, None, OSError())
        with pytest.raises(DataError, match="is on another file system than --dst"):
            prepare_gopro(src, options(dst))
        assert calls == [0] and sorted(p.name for p in dst.iterdir()) == ["test"]
        assert list(elsewhere.iterdir()) == []
    finally:
        shutil.rmtree(elsewhere)


def test_cli_error_names_final_paths(tmp_path, capsys):
    src = make_gopro(tmp_path / "src")
    dst = tmp_path / "datasets"
    (dst / "test" / "GoPro" / "target").mkdir(parents=True)
    (dst / "test" / "GoPro" / "target" / "old.png").write_bytes(b"old")
    before = tree(dst)
    code = prepare_main(["gopro", "--src", str(src), "--dst", str(dst), "--no-verify", "--crop-size", "32",
                         "--crop-stride", "16", "--val-crop", "16", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: output folder '{dst / 'test' / 'GoPro' / 'target'}' already exists and is not empty" in err
    assert tree(dst) == before


def test_error_about_a_staged_file_names_its_final_path(tmp_path):
    src, dst = make_gopro(tmp_path / "src"), tmp_path / "datasets"
    bad = src / "GOPRO_Large" / "test" / TEST_SCENES[0] / "blur" / "000002.png"
    bad.write_bytes(bad.read_bytes()[:60])
    # unverified, the corrupt frame is only decoded when the staged test folder is stored as LMDB
    with pytest.raises(DataError) as err:
        prepare_gopro(src, options(dst, verify=False, lmdb=True))
    final = dst / "test" / "GoPro" / "input" / f"{TEST_SCENES[0]}-000002.png"
    assert f"cannot decode image '{final}'" in str(err.value) and staging.PREFIX not in str(err.value)
    assert not dst.exists()


def test_dpdd_failure_at_the_last_step_keeps_previous_set(tmp_path, monkeypatch):
    base = tmp_path / "src" / "dd_dp_dataset_png"
    for split, keys in (("train", ["t1"]), ("val", ["v1"]), ("test", ["img1", "img2"])):
        for k in keys:
            for folder, name in ((f"{split}_c/source", k), (f"{split}_c/target", k), (f"{split}_l/source", k + "_L"),
                                 (f"{split}_r/source", k + "_R")):
                (base / folder).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(base / folder / f"{name}.png"), frame(len(name) + len(folder), 12, 16))
    np.save(base / "indoor_labels.npy", np.array([1]))
    np.save(base / "outdoor_labels.npy", np.array([2]))
    dst = tmp_path / "datasets"
    prepare_dpdd(base.parent, options(dst))
    before = tree(dst)
    real = dpdd.place_file

    def copy_label(src, target, mode):  # every image folder is staged by now; the label copy fails
        real(src, target, mode)
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(dpdd, "place_file", copy_label)
    with pytest.raises(OSError, match=str(dst / "DPDD" / "test" / "indoor_labels.npy")):
        prepare_dpdd(base.parent, options(dst, overwrite=True, mode="copy"))
    assert tree(dst) == before
