"""The training command's exit codes: 2 only for input refused before anything was written, 1 for a failure
once the run folder was being written (before, a checkpoint that could not be saved also exited 2)."""
from __future__ import annotations

import yaml

from conftest import PY, REPO, run_env
from engine_tiny_run import tiny_options, write_pairs
from procs import run_checked

TRAIN = [PY, str(REPO / "scripts" / "train.py")]


def test_a_checkpoint_that_cannot_be_saved_after_the_start_exits_1_not_2(tmp_path):
    write_pairs(tmp_path / "data")
    opts = tiny_options(tmp_path, train={"total_iter": 4}, logger={"save_checkpoint_freq": 2, "print_freq": 1})
    cfg = tmp_path / "tiny.yml"
    cfg.write_text(yaml.safe_dump(opts, sort_keys=False))
    run_checked(TRAIN + ["-opt", cfg, "--stop-after", "2"], timeout=300, env=run_env(), cwd=tmp_path)
    run = tmp_path / "experiments" / "tiny"
    (run / "models" / "net_g_4.pth").mkdir()          # the checkpoint of iteration 4 cannot be written
    r = run_checked(TRAIN + ["-opt", cfg, "--resume", "auto"], timeout=300, env=run_env(), cwd=tmp_path,
                    returncode=1)
    assert "training failed: saving the checkpoint of iteration 4" in r.stderr, r.stderr[-2000:]
    log = sorted(run.glob("train_tiny_*.log"))[-1].read_text()
    assert "training ended at iteration 4 by CheckpointError" in log, log[-2000:]


def test_bad_input_still_exits_2_and_a_folder_given_as_option_file_is_named(tmp_path):
    r = run_checked(TRAIN + ["-opt", tmp_path], timeout=120, env=run_env(), cwd=tmp_path, returncode=2)
    assert f"error: -opt {tmp_path}: this is a folder; expected an option file" in r.stderr, r.stderr
    r = run_checked(TRAIN + ["-opt", tmp_path / "missing.yml"], timeout=120, env=run_env(), cwd=tmp_path,
                    returncode=2)
    assert "option file not found" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
