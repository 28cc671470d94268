"""The demo's pieces (bundled photos, frozen test pairs, how training is launched) and what the command does
with its arguments and with the run folders of an earlier demo."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import pytest

from conftest import REPO, run_env
from hidiff.config import load_options
from hidiff.runners import demo
from hidiff.utils.folder_lock import try_lock_folder
from procs import run_checked

OPTIONS = Path(__file__).resolve().parents[1] / "options"


def test_training_command_uses_torchrun_on_two_cores_and_keeps_the_global_batch():
    args = ["scripts/train.py", "-opt", "options/demo_stage1.yml"]
    two = demo.training_command(args, 2)
    assert two[:4] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert two[4:7] == args and two[-2:] == ["--launcher", "pytorch"]
    one = demo.training_command(args, 1)
    assert one == [*args, "-o", f"datasets.train.batch_size_per_gpu={2 * demo.BATCH_PER_PROCESS}"]


def test_demo_option_files_share_the_blur_and_network():
    s1 = load_options(OPTIONS / "demo_stage1.yml", is_train=True)
    s2 = load_options(OPTIONS / "demo_stage2.yml", is_train=True)
    for opt in (s1, s2):
        train = opt.datasets["train"]
        assert train.batch_size_per_gpu == demo.BATCH_PER_PROCESS
        assert (train.params["kernel_size"], train.params["kernel_pool"]) == (demo.KERNEL_SIZE, demo.KERNEL_POOL)
    assert s1.networks["g"] == s2.networks["g"]


def test_photos_and_frozen_test_pairs(tmp_path):
    photos = demo.copy_photos(demo.TEST_PHOTOS, tmp_path / "sharp", max_side=96)
    assert [p.name for p in photos] == ["chelsea.png", "rocket.png"]
    assert all(max(cv2.imread(str(p)).shape[:2]) == 96 for p in photos)
    n = demo.freeze_test_pairs(tmp_path / "sharp", tmp_path / "test", kernel_size=demo.KERNEL_SIZE, seed=3)
    assert n == 2
    for p in photos:
        lq = cv2.imread(str(tmp_path / "test" / "input" / p.name))
        gt = cv2.imread(str(tmp_path / "test" / "target" / p.name))
        assert lq.shape == gt.shape and (lq != gt).any()


# ---- the demo command in a workspace of its own (it works in the current folder: datasets/, experiments/)

DEMO = [sys.executable, "scripts/demo.py"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    for name in ("options", "scripts"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def _written(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()
            and "options" not in p.relative_to(root).parts[:1] and "scripts" not in p.relative_to(root).parts[:1]}


@pytest.mark.parametrize("args, option", [(["--iters1", "0"], "--iters1"), (["--iters2", "-1"], "--iters2"),
                                          (["--iters1", "5", "--iters2", "many"], "--iters2")])
def test_bad_arguments_are_refused_before_anything_is_written(workspace, args, option):
    # before, --iters1 0 trained the file's full count and --iters2 -1 failed only after stage 1 had trained
    r = run_checked(DEMO + args, timeout=60, env=run_env(), cwd=workspace, returncode=2)
    assert f"argument {option}: expected a positive number of iterations" in r.stderr, r.stderr
    assert sorted(p.name for p in workspace.iterdir()) == ["options", "scripts"]


def test_a_run_folder_that_a_training_holds_is_refused_and_left_as_it_is(workspace):
    # before, the demo deleted experiments/demo_stage1 and demo_stage2 first, whatever they held
    folder = workspace / "experiments" / "demo_stage2"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine\n")
    before = _written(workspace)
    fd = try_lock_folder(folder)                  # what a running training holds
    try:
        r = run_checked(DEMO + ["--iters1", "2", "--iters2", "2"], timeout=120, env=run_env(), cwd=workspace,
                        returncode=2)
    finally:
        os.close(fd)
    assert f"{Path('experiments') / 'demo_stage2'}: a training is using this run folder now" in r.stderr, r.stderr
    assert _written(workspace) == before and not (workspace / "datasets").exists()


@pytest.mark.slow
def test_an_earlier_demo_is_kept_continued_or_archived_never_deleted(workspace):
    # the test photos the demo would copy at full size, already there at 96 px (it keeps existing files): the
    # test step restores them whole three times
    demo.copy_photos(demo.TEST_PHOTOS, workspace / "datasets" / "demo" / "test_sharp", max_side=96)
    experiments = workspace / "experiments"
    (experiments / "demo_stage1").mkdir(parents=True)
    (experiments / "demo_stage1" / "notes.txt").write_text("mine\n")
    short = DEMO + ["--iters1", "1", "--iters2", "1"]
    first = run_checked(short, timeout=600, env=run_env(), cwd=workspace)
    (kept,) = experiments.glob("demo_stage1_archived_*")          # not deleted: moved aside
    assert (kept / "notes.txt").read_text() == "mine\n", first.stdout[-2000:]
    runs = {p: p.read_bytes() for p in experiments.rglob("*") if p.is_file() and "training_states" in p.parts}
    assert len(runs) == 2

    again = run_checked(short, timeout=600, env=run_env(), cwd=workspace)    # the same demo: kept as it is
    assert f"stage 1: {Path('experiments') / 'demo_stage1'} is trained (1 of 1 iterations)" in again.stdout
    assert f"stage 2: {Path('experiments') / 'demo_stage2'} is trained (1 of 1 iterations)" in again.stdout
    assert "training stage 1: already trained, nothing to run" in again.stdout     # no training launched
    assert "training stage 2: already trained, nothing to run" in again.stdout
    assert "data-parallel process" not in again.stdout
    assert {p: p.read_bytes() for p in experiments.rglob("*") if p.is_file() and "training_states" in p.parts} == runs
    assert len(list(experiments.glob("*_archived_*"))) == 1

    longer = run_checked(DEMO + ["--iters1", "2", "--iters2", "1"], timeout=600, env=run_env(), cwd=workspace)
    assert "options differ: train.scheduler.periods: [1] -> [2]; train.total_iter: 1 -> 2" in longer.stdout
    archived = sorted(experiments.glob("*_archived_*"))
    assert len(archived) == 3 and sum("demo_stage2_archived" in p.name for p in archived) == 1, archived
    for path, data in runs.items():               # every earlier checkpoint is still there, moved whole
        run, rel = path.parents[1].name, path.relative_to(path.parents[1])
        assert any((a / rel).is_file() and (a / rel).read_bytes() == data
                   for a in archived if a.name.startswith(f"{run}_archived_")), path
    assert (experiments / "demo_stage1" / "training_states" / "2.state").is_file()
