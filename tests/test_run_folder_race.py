"""Two starts of one new run name: the one that gets to the run folder second is refused and moves nothing
(before, it archived the first's new folder and both trained into experiments/<name>)."""
from __future__ import annotations

import signal

import pytest
import torch
import yaml

from conftest import PY, REPO, run_env
from engine_tiny_run import tiny_options, write_pairs
from procs import spawn  # noqa: F401  (a fixture)

TRAIN = [PY, str(REPO / "scripts" / "train.py")]


@pytest.mark.parametrize("resume", ["none", "auto"])
def test_the_second_of_two_fresh_starts_of_a_new_name_is_refused_and_moves_nothing(tmp_path, spawn, resume):
    write_pairs(tmp_path / "data")
    opts = tiny_options(tmp_path, train={"total_iter": 5000}, logger={"save_checkpoint_freq": 2, "print_freq": 1})
    cfg = tmp_path / "tiny.yml"
    cfg.write_text(yaml.safe_dump(opts, sort_keys=False))
    run = tmp_path / "experiments" / "race"
    # the second start passes its checks while no run folder exists, then waits (a test hook) until the first
    # start has created, locked and written its folder
    second = spawn(TRAIN + ["-opt", cfg, "-o", "name=race", "-o", "manual_seed=99", "--resume", resume],
                   cwd=tmp_path, env={**run_env(), "HIDIFF_TEST_CLAIM_AFTER_FILE": str(run / "config.yml")})
    second.wait_for("HIDIFF_TEST_CLAIM_AFTER_FILE: waiting for", timeout=180)
    assert not run.exists()
    first = spawn(TRAIN + ["-opt", cfg, "-o", "name=race"], cwd=tmp_path, env=run_env())
    first.wait_for(r"iter:\s+1,", timeout=180)
    assert second.finish(timeout=120) == 2, second.explain("expected the second start to be refused")
    assert f"error: {run}: another training is using this run folder now" in second.output, second.output[-2000:]
    assert sorted(p.name for p in run.parent.iterdir()) == ["race"]          # nothing archived
    first.wait_for(r"Saving models and training states at iteration 4 ", timeout=180)
    first.p.send_signal(signal.SIGTERM)
    assert first.finish(timeout=120) == 4, first.explain("expected the first start to stop on SIGTERM")
    assert yaml.safe_load((run / "config.yml").read_text())["manual_seed"] == 11
    assert len(list(run.glob("train_race_*.log"))) == 1
    states = sorted(run.glob("training_states/*.state"))
    assert states and all(torch.load(p, weights_only=True)["config"]["manual_seed"] == 11 for p in states)
    assert sorted(p.name for p in run.parent.iterdir()) == ["race"]
