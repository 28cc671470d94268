"""``train.checkpoint_levels``: activation checkpointing through the real trainer changes memory, not the maths."""
from __future__ import annotations

import pytest
import torch
import yaml

from engine_tiny_run import tiny_options, write_pairs
from hidiff.config import options_from_text
from hidiff.utils.checkpoint import safe_load
from hidiff.engine.trainer import Trainer
from hidiff.errors import ConfigError


def _train(tmp_path, name, levels, recompute=True, branches=False):
    opts = tiny_options(tmp_path, name=name,
                        train={"total_iter": 2, "checkpoint_levels": levels, "use_grad_clip": False,
                               "recompute_ffn": recompute, "recompute_branches": branches},
                        logger={"save_checkpoint_freq": 2, "print_freq": 1})
    res = Trainer(options_from_text(yaml.safe_dump(opts, sort_keys=False))).fit()
    log = next(res.experiment_dir.glob("train_*.log")).read_text()
    assert ("activation checkpointing" in log) == bool(levels)
    said = "net_g: the feed-forward blocks recompute their depthwise conv and GELU gate in backward"
    assert (said in log) == (recompute and not branches), log
    said = "net_g: the Transformer blocks keep only their matrix products' outputs for backward"
    assert (said in log) == branches, log
    return {n: safe_load(res.experiment_dir / "models" / f"net_{n}_2.pth")["params"] for n in ("g", "le")}


def test_checkpointed_levels_train_to_the_same_weights(tmp_path):
    write_pairs(tmp_path / "data")
    plain = _train(tmp_path, "plain", [])
    ckpt = _train(tmp_path, "ckpt", [1, 4, "refinement"])  # the log names the checkpointed stages
    for net in plain:
        for k in plain[net]:
            torch.testing.assert_close(ckpt[net][k], plain[net][k], rtol=1e-5, atol=1e-6, msg=f"net_{net}.{k}")


def test_recomputed_feed_forward_trains_to_the_same_weights_bit_for_bit(tmp_path):
    write_pairs(tmp_path / "data")
    stored = _train(tmp_path, "stored", [], recompute=False)
    recomputed = _train(tmp_path, "recomputed", [])
    for net in stored:
        for k in stored[net]:
            assert torch.equal(recomputed[net][k], stored[net][k]), f"net_{net}.{k}"


def test_selectively_recomputed_branches_train_to_the_same_weights_bit_for_bit(tmp_path):
    write_pairs(tmp_path / "data")
    default = _train(tmp_path, "default", [])
    branches = _train(tmp_path, "branches", [], branches=True)
    for net in default:
        for k in default[net]:
            assert torch.equal(branches[net][k], default[net][k]), f"net_{net}.{k}"


def test_unknown_level_is_refused_at_load_time(tmp_path):
    text = yaml.safe_dump(tiny_options(tmp_path, train={"checkpoint_levels": [5, "latnet"]}), sort_keys=False)
    with pytest.raises(ConfigError, match=r"train\.checkpoint_levels.*5"):
        options_from_text(text)
