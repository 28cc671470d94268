"""A start that would fail at its first training step fails before the run folder is written or archived:
one forward pass of the first training sample, with every random state restored afterwards."""
from __future__ import annotations

import copy

import pytest
import torch
import yaml

from engine_tiny_run import tiny_options, tiny_s2_options, write_pairs
from hidiff.config import options_from_text
from hidiff.engine.trainer import Trainer
from hidiff.errors import ConfigError, DataError


def _options(opts: dict):
    return options_from_text(yaml.safe_dump(opts, sort_keys=False))


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("stage, change, message", [
    (1, lambda o: o["network_le"].update(embed_dim=8), "network_g, network_le"),
    (2, lambda o: o["network_d"].update(in_channel=32, out_channel=32), "denoising"),
    (2, lambda o: o["network_le_dm"].update(embed_dim=8), "network_le_dm"),
])
def test_networks_that_do_not_fit_fail_before_the_previous_run_is_archived(tmp_path, stage, change, message):
    write_pairs(tmp_path / "data")
    opts = (tiny_options if stage == 1 else tiny_s2_options)(tmp_path, train={"total_iter": 2})
    Trainer(_options(opts)).fit()                          # a finished run, kept as it is
    run = tmp_path / "experiments" / opts["name"]
    before = _files(run)
    bad = copy.deepcopy(opts)
    change(bad)
    with pytest.raises(ConfigError, match="the networks do not fit together") as err:
        Trainer(_options(bad), resume="none").fit()
    assert message in str(err.value) and "first training sample (lq (1, 3, 32, 32)" in str(err.value), err.value
    assert _files(run) == before
    assert not [p for p in (tmp_path / "experiments").iterdir() if "_archived_" in p.name]


def test_a_crop_larger_than_the_images_fails_before_anything_is_written(tmp_path):
    write_pairs(tmp_path / "data", size=40)
    opts = tiny_options(tmp_path)
    opts["datasets"]["train"]["gt_size"] = 48
    with pytest.raises(DataError, match="48"):
        Trainer(_options(opts)).fit()
    assert not (tmp_path / "experiments").exists()


def test_images_that_cannot_give_a_sample_are_all_named_before_anything_is_written(tmp_path):
    """Item 0 fits, so the first-sample check passed; a too-small image or a pair of two sizes stopped the run
    when it was first drawn, after the run folder and checkpoints existed (skip_corrupt does not cover it)."""
    import cv2

    lq_dir, gt_dir = write_pairs(tmp_path / "data")
    small = cv2.imread(str(gt_dir / "im03.png"))[:24, :24]
    cv2.imwrite(str(gt_dir / "im03.png"), small)
    cv2.imwrite(str(lq_dir / "im03.png"), small)
    cv2.imwrite(str(gt_dir / "im05.png"), cv2.imread(str(gt_dir / "im05.png"))[:36])
    opts = tiny_options(tmp_path)
    opts["datasets"]["train"]["skip_corrupt"] = True
    with pytest.raises(DataError, match=r"2 image\(s\) cannot give a training sample") as err:
        Trainer(_options(opts)).fit()
    text = str(err.value)
    assert "im03.png' is 24x24, smaller than the crop size 32" in text
    assert "im05.png' is 40x40 but target" in text and "is 36x40" in text
    assert not (tmp_path / "experiments").exists()


def test_the_check_leaves_the_run_unchanged(tmp_path):
    """The weights after two stage-2 steps (its training draws noise from the global generator) are the same
    as when the check's forward pass draws nothing: fork_rng restores the state it consumed."""
    write_pairs(tmp_path / "data")
    import hidiff.engine.setup as setup

    def final(skip: bool, name: str):
        opts = tiny_s2_options(tmp_path, train={"total_iter": 2})
        opts["name"] = name
        original = setup.check_first_sample
        if skip:
            setup.check_first_sample = lambda t: None
        try:
            import hidiff.engine.trainer as trainer
            saved, trainer.check_first_sample = trainer.check_first_sample, setup.check_first_sample
            try:
                Trainer(_options(opts)).fit()
            finally:
                trainer.check_first_sample = saved
        finally:
            setup.check_first_sample = original
        return torch.load(tmp_path / "experiments" / name / "models" / "net_d_latest.pth")["params"]

    with_check, without = final(False, "a"), final(True, "b")
    assert with_check.keys() == without.keys()
    assert all(torch.equal(with_check[k], without[k]) for k in with_check)
