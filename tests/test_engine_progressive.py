"""Progressive patch/batch schedule (docs/architecture.md 3.2)."""
import pytest
import torch

from hidiff.engine.progressive import ProgressiveSchedule
from hidiff.errors import ConfigError

OFFICIAL = dict(iters=[20000, 20000, 20000, 20000, 20000, 200000], gt_sizes=[128, 160, 192, 256, 320, 384],
                mini_batch_sizes=[16, 10, 8, 4, 2, 2])


def test_official_stage_boundaries():
    s = ProgressiveSchedule(**OFFICIAL, seed=100)
    assert s.sizes(1) == (128, 16) and s.sizes(20000) == (128, 16)
    assert s.sizes(20001) == (160, 10) and s.sizes(40000) == (160, 10)
    assert s.sizes(80001) == (320, 2) and s.sizes(100001) == (384, 2)
    assert s.sizes(300000) == (384, 2) and s.sizes(10 ** 7) == (384, 2)  # stays at the last stage
    assert s.total == 300000 and s.describe()[1] == {"from": 20001, "to": 40000, "patch": 160, "batch": 10}


def _batch(b=4, size=16):
    gt = torch.rand(b, 3, size, size)
    return {"gt": gt, "lq": gt + 1.0, "key": [f"im{i}" for i in range(b)]}


def test_subset_and_shared_crop():
    s = ProgressiveSchedule(iters=[2, 2], gt_sizes=[8, 16], mini_batch_sizes=[2, 4], seed=1)
    batch = _batch()
    out = s.apply(batch, 1)
    assert out["gt"].shape == (2, 3, 8, 8) and out["lq"].shape == (2, 3, 8, 8)
    assert torch.equal(out["lq"], out["gt"] + 1.0)  # same samples, same crop position in lq and gt
    # the crops are real windows of the chosen samples
    idx = [int(k[2:]) for k in out["key"]]
    hit = False
    for y in range(9):
        for x in range(9):
            hit |= torch.equal(batch["gt"][idx, :, y:y + 8, x:x + 8], out["gt"])
    assert hit
    full = s.apply(batch, 3)  # last stage: whole batch, no crop
    assert torch.equal(full["gt"], batch["gt"]) and full["key"] == batch["key"]


def test_deterministic_and_resumable():
    a = ProgressiveSchedule(iters=[5], gt_sizes=[8], mini_batch_sizes=[2], seed=7)
    b = ProgressiveSchedule(iters=[5], gt_sizes=[8], mini_batch_sizes=[2], seed=7)
    batch = _batch()
    for k in range(1, 4):
        assert torch.equal(a.apply(batch, k)["gt"], b.apply(batch, k)["gt"])
    state = a.state_dict()
    cont = [a.apply(batch, k)["gt"] for k in range(4, 7)]
    c = ProgressiveSchedule(iters=[5], gt_sizes=[8], mini_batch_sizes=[2], seed=123)
    c.load_state_dict(state)
    for k, ref in zip(range(4, 7), cont):
        assert torch.equal(c.apply(batch, k)["gt"], ref)
    other_rank = ProgressiveSchedule(iters=[5], gt_sizes=[8], mini_batch_sizes=[2], seed=7, rank=1)
    assert not all(torch.equal(other_rank.apply(batch, k)["gt"], b.apply(batch, k)["gt"]) for k in range(4, 9))


def test_crop_positions_cover_the_range():
    s = ProgressiveSchedule(iters=[1], gt_sizes=[2], mini_batch_sizes=[1], seed=0)
    gt = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 1, 6, 6).contiguous()
    xs = {int(s.apply({"gt": gt}, 1)["gt"][0, 0, 0, 0]) for _ in range(200)}
    assert xs == {0, 1, 2, 3}  # int((6 - 2) * U[0,1)) takes the values 0..3


def test_errors():
    with pytest.raises(ConfigError, match="same length"):
        ProgressiveSchedule(iters=[1, 2], gt_sizes=[8], mini_batch_sizes=[1], seed=0)
    s = ProgressiveSchedule(iters=[1], gt_sizes=[32], mini_batch_sizes=[1], seed=0)
    with pytest.raises(ConfigError, match="max\\(gt_sizes\\) = 32"):
        s.apply(_batch(size=16), 1)
