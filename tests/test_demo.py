"""The demo's pieces: bundled photos, frozen test pairs, and how training is launched."""
from __future__ import annotations

from pathlib import Path

import cv2

from hidiff.config import load_options
from hidiff.runners import demo

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
