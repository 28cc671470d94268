"""Non-finite losses: the step is skipped and counted; too many in a row stop the run clearly."""
from __future__ import annotations

import math

import pytest
import torch
import yaml

from engine_tiny_run import tiny_options, write_pairs
from hidiff.config import options_from_text
from hidiff.data.paired_dataset import PairedImageDataset
from hidiff.data.sample_rng import split_index
from hidiff.utils.checkpoint import safe_load
from hidiff.engine.nonfinite import NonFiniteLossError
from hidiff.engine.trainer import Trainer
from hidiff.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register("NaNInjectedPairs")
class NaNInjectedPairs(PairedImageDataset):
    """Paired images whose blurry input is NaN for the listed (index, epoch) samples ('all' = every sample)."""

    def __init__(self, nan_samples, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_samples = nan_samples if nan_samples == "all" else {tuple(s) for s in nan_samples}

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if self.nan_samples == "all" or tuple(split_index(index)) in self.nan_samples:
            item["lq"] = torch.full_like(item["lq"], math.nan)
        return item




def _options(tmp_path, nan_samples, max_consecutive=20):
    opts = tiny_options(tmp_path, train={"total_iter": 6, "ema_decay": 0.5,
                                         "max_consecutive_nonfinite": max_consecutive},
                        logger={"save_checkpoint_freq": 6})
    opts["datasets"]["train"]["type"] = "NaNInjectedPairs"
    opts["datasets"]["train"]["nan_samples"] = nan_samples
    return options_from_text(yaml.safe_dump(opts, sort_keys=False))


def test_nan_batch_is_skipped_and_counted(tmp_path):
    write_pairs(tmp_path / "data")
    # sample 3 of epoch 0 is NaN: exactly one batch of the first epoch holds it
    result = Trainer(_options(tmp_path, [[3, 0]])).fit()
    assert result.skipped_steps == 1 and result.last_iter == 6
    log = next(result.experiment_dir.glob("train_tiny_*.log")).read_text()
    assert "iteration 3: non-finite loss or gradient, step skipped (1 skipped so far)" in log
    assert "iter:       6, lr:" in log and "skipped: 1" in log  # the periodic log line counts it
    state = safe_load(result.experiment_dir / "training_states" / "6.state")
    assert state["nonfinite"] == {"total": 1, "consecutive": 0}
    for net in ("g", "le"):
        f = safe_load(result.experiment_dir / "models" / f"net_{net}_6.pth")
        for key in ("params", "params_ema"):
            assert all(torch.isfinite(v).all() for v in f[key].values()), f"{net} {key} got NaN"


def test_too_many_consecutive_nonfinite_steps_stop_the_run(tmp_path):
    write_pairs(tmp_path / "data")
    opts = _options(tmp_path, "all", max_consecutive=3)
    with pytest.raises(NonFiniteLossError, match="iteration 3: 3 consecutive steps had a non-finite loss"):
        Trainer(opts).fit()
