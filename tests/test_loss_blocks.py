"""Training loss blocks (train.*_opt) are checked at load: values a training loss cannot use, and blocks the
model would never read; the first-sample check also makes sure the total is one number."""
from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml

from engine_tiny_run import tiny_options, tiny_s2_options, write_pairs
from hidiff.config import options_from_text
from hidiff.engine.setup import check_loss_total
from hidiff.engine.trainer import Trainer
from hidiff.errors import ConfigError
from hidiff.losses import PerceptualLoss
from hidiff.registry import LOSS_REGISTRY


def load(opt: dict):
    return options_from_text(yaml.safe_dump(opt, sort_keys=False))


def load_error(opt: dict) -> str:
    with pytest.raises(ConfigError) as err:
        load(opt)
    return str(err.value)


def plain_options(root, **extra):
    opt = tiny_options(root, model_type="PlainRestoration", name="tiny_plain", **extra)
    del opt["network_le"]
    opt["network_g"]["use_prior"] = False
    return opt


# ------------------------------------------------------------------------------------------ reduction: none
@pytest.mark.parametrize("block", ["pixel_opt", "perceptual_opt"])
def test_reduction_none_is_refused_at_load_naming_the_key(tmp_path, block):
    msg = load_error(tiny_options(tmp_path, train={block: {"type": "L1Loss", "reduction": "none"}}))
    assert f"train.{block}.reduction: expected one of 'mean', 'sum', got 'none'" in msg, msg
    assert "one number" in msg, msg


def test_reduction_none_of_stage2s_prior_loss_is_refused_at_load(tmp_path):
    opt = tiny_s2_options(tmp_path)
    opt["train"]["pixel_diff_opt"] = {"type": "CharbonnierLoss", "reduction": "none"}
    assert "train.pixel_diff_opt.reduction: expected one of 'mean', 'sum', got 'none'" in load_error(opt)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_scalar_reductions_still_load(tmp_path, reduction):
    opt = load(tiny_options(tmp_path, train={"pixel_opt": {"type": "MSELoss", "reduction": reduction}}))
    assert opt.train.pixel_opt.kwargs["reduction"] == reduction


@LOSS_REGISTRY.register("PerPixelL1TestLoss")
class PerPixelL1TestLoss(torch.nn.Module):
    """A loss that leaves one value per pixel (what reduction: none did), registered for this test only."""

    def forward(self, pred, target):
        return F.l1_loss(pred, target, reduction="none")


def test_a_loss_that_is_not_one_number_fails_the_first_sample_check_before_anything_is_written(tmp_path):
    write_pairs(tmp_path / "data")
    opts = load(tiny_options(tmp_path, train={"total_iter": 2, "pixel_opt": {"type": "PerPixelL1TestLoss"}}))
    with pytest.raises(ConfigError, match=r"not one number: every loss block \(train.pixel_opt\) must reduce to a "
                                          r"scalar") as err:
        Trainer(opts).fit()
    assert "shape (1, 3, 32, 32)" in str(err.value), err.value
    assert not (tmp_path / "experiments").exists()


def test_a_non_finite_first_loss_is_said_and_left_to_the_trainer(caplog):
    t = SimpleNamespace(topt=SimpleNamespace(pixel_opt=None), log=logging.getLogger("hidiff.test_loss_total"))
    with caplog.at_level(logging.WARNING, logger="hidiff.test_loss_total"):
        check_loss_total(t, torch.tensor(math.nan))
    assert "first training sample is nan" in caplog.text
    with pytest.raises(ConfigError, match="the default L1 losses"):
        check_loss_total(t, torch.zeros(2))
    with pytest.raises(ConfigError, match="is NoneType, not one number"):
        check_loss_total(t, None)
    check_loss_total(t, torch.tensor(0.5))     # one finite number: nothing to say


# ------------------------------------------------------------------------------------------ unused blocks
def test_stage1_refuses_the_prior_loss_it_would_ignore(tmp_path):
    msg = load_error(tiny_options(tmp_path, train={"pixel_diff_opt": {"type": "L1Loss", "loss_weight": 5.0}}))
    assert "train.pixel_diff_opt: model_type HI_Diff_S1 has no diffusion prior" in msg, msg
    assert "reads only train.pixel_opt, train.perceptual_opt, so this block would be ignored; remove it" in msg


def test_a_plain_model_refuses_the_prior_loss_it_would_ignore(tmp_path):
    assert load(plain_options(tmp_path)).model_type == "PlainRestoration"
    msg = load_error(plain_options(tmp_path, train={"pixel_diff_opt": {"type": "L1Loss"}}))
    assert "train.pixel_diff_opt: model_type PlainRestoration has no diffusion prior" in msg, msg


def test_stage2_reads_every_loss_block(tmp_path):
    opt = load(tiny_s2_options(tmp_path))
    assert opt.train.pixel_diff_opt.type == "L1Loss"


def test_a_saved_config_with_null_blocks_loads(tmp_path):
    """A run's config.yml lists every key, unused loss blocks as null: that is no block."""
    opt = tiny_options(tmp_path, train={"pixel_diff_opt": None, "perceptual_opt": None})
    assert load(opt).train.pixel_diff_opt is None


# ------------------------------------------------------------------------------------------ perceptual loss
@pytest.mark.parametrize("block, expected", [
    ({"layer_weights": {}}, "train.perceptual_opt.layer_weights: expected a mapping of VGG16 ReLU names to "
                            "weights with at least one layer"),
    ({"layer_weights": {"relu3_3": -1.0}}, "train.perceptual_opt.layer_weights: the weight of 'relu3_3' must be "
                                           "a finite number >= 0, got -1.0"),
    ({"layer_weights": {"relu3_4": 1.0}}, "train.perceptual_opt.layer_weights: perceptual loss layer 'relu3_4' is "
                                          "not a VGG16 ReLU (did you mean 'relu3_3'?)"),
    ({"criterion": "l3"}, "train.perceptual_opt.criterion: the perceptual loss criterion must be 'l1' or 'l2', got "
                          "'l3'"),
])
def test_perceptual_values_are_refused_at_load(tmp_path, block, expected):
    msg = load_error(tiny_options(tmp_path, train={"perceptual_opt": {"type": "PerceptualLoss", **block}}))
    assert expected in msg, msg


def test_perceptual_layer_weights_are_refused_when_built():
    with pytest.raises(ConfigError, match="at least one layer"):
        PerceptualLoss(layer_weights={}, features=torch.nn.Sequential())
    with pytest.raises(ConfigError, match="'relu2_2' must be a finite number >= 0, got -0.5"):
        PerceptualLoss(layer_weights={"relu3_3": 1.0, "relu2_2": -0.5}, features=torch.nn.Sequential())
    features = torch.nn.Sequential(*[torch.nn.ReLU() for _ in range(16)])
    loss = PerceptualLoss(layer_weights={"relu3_3": 0.0, "relu1_1": 2.0}, features=features)
    assert loss.layer_weights == {"relu3_3": 0.0, "relu1_1": 2.0}
    assert PerceptualLoss(features=features).layer_weights == {"relu3_3": 1.0}   # not given: the default
