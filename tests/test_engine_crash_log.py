"""A training that ends on an unexpected error says so in its run log, where a reader looks when the console
is gone (a side-by-side seed whose piped output lost its reader, a closed terminal)."""
from __future__ import annotations

import pytest
import yaml

from engine_tiny_run import tiny_options, write_pairs
from hidiff.config import options_from_text
from hidiff.data.paired_dataset import PairedImageDataset
from hidiff.data.sample_rng import split_index
from hidiff.engine.trainer import Trainer
from hidiff.errors import DataError
from hidiff.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register("CrashingPairs")
class CrashingPairs(PairedImageDataset):
    """Paired images whose sample ``crash_at`` (an index of epoch 0) raises ``error`` ('bug' or 'data')."""

    def __init__(self, crash_at: int, error: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.crash_at, self.error = crash_at, error

    def __getitem__(self, index):
        if tuple(split_index(index)) == (self.crash_at, 0):
            if self.error == "bug":
                raise RuntimeError("sample reader broke")
            raise DataError("input/im05.png: the file was removed while training")
        return super().__getitem__(index)


def _options(tmp_path, error):
    opts = tiny_options(tmp_path, train={"total_iter": 8}, logger={"save_checkpoint_freq": 8, "print_freq": 1})
    opts["datasets"]["train"].update(type="CrashingPairs", crash_at=5, error=error)
    return options_from_text(yaml.safe_dump(opts, sort_keys=False))


def test_an_unexpected_error_is_written_to_the_run_log_with_its_traceback(tmp_path):
    write_pairs(tmp_path / "data")
    with pytest.raises(RuntimeError, match="sample reader broke"):
        Trainer(_options(tmp_path, "bug")).fit()
    log = next((tmp_path / "experiments" / "tiny").glob("train_tiny_*.log")).read_text()
    ended = [line for line in log.splitlines() if "training ended at iteration" in line]
    assert len(ended) == 1 and "by RuntimeError: sample reader broke" in ended[0], log[-2000:]
    iteration = int(ended[0].split("training ended at iteration ")[1].split()[0])
    assert 1 <= iteration <= 4, log[-2000:]     # 8 samples in batches of 2: sample 5 of epoch 0 is in 1-4
    assert "Traceback (most recent call last)" in log and 'raise RuntimeError("sample reader broke")' in log


def test_a_known_error_is_written_as_its_message_only(tmp_path):
    write_pairs(tmp_path / "data")
    with pytest.raises(DataError):
        Trainer(_options(tmp_path, "data")).fit()
    log = next((tmp_path / "experiments" / "tiny").glob("train_tiny_*.log")).read_text()
    assert "by DataError: input/im05.png: the file was removed while training" in log, log[-2000:]
    assert "Traceback" not in log

