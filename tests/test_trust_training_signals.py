"""SIGINT/SIGTERM/SIGHUP stop a training run gracefully (step finished, checkpoint saved, exit code 4, resumable);
SIGKILL in the middle of a save leaves nothing that a reader would take."""
from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_env
from engine_tiny_run import tiny_options, tiny_s2_options, write_pairs
from hidiff.engine.checkpoint_store import HANG_ENV, HANG_FIRST_ENV, latest_complete
from procs import run_checked, spawn, torchrun  # noqa: F401  (spawn: a fixture)

TRAIN = [sys.executable, str(REPO / "scripts" / "train.py")]


def _config(tmp_path: Path, workers: int = 0, **logger) -> Path:
    write_pairs(tmp_path / "data")
    opts = tiny_options(tmp_path, train={"total_iter": 100000}, datasets={"train": {"num_worker_per_gpu": workers}},
                        logger={"print_freq": 1, "save_checkpoint_freq": 100000, **logger})
    cfg = tmp_path / "tiny.yml"
    cfg.write_text(yaml.safe_dump(opts, sort_keys=False))
    return cfg


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_saves_the_checkpoint_of_that_iteration_and_exits_4(tmp_path, sig, spawn):
    cfg = _config(tmp_path)
    proc = spawn(TRAIN + ["-opt", str(cfg)], tmp_path)
    proc.wait_for(r"iter:\s+1, lr:")
    proc.p.send_signal(sig)
    assert proc.finish() == 4, proc.explain(f"expected exit code 4 after {sig.name}")
    m = re.search(rf"stopped by {sig.name} at iteration (\d+) of 100000; the checkpoint of iteration \1 is saved",
                  proc.output)
    assert m, proc.output
    stopped = int(m.group(1))
    assert f"training stopped by {sig.name} at iteration {stopped}; its checkpoint is saved" in proc.output
    assert "Traceback" not in proc.output
    run = tmp_path / "experiments" / "tiny"
    unit = latest_complete(run)
    assert unit.iteration == stopped and unit.state == run / "training_states" / f"{stopped}.state"
    log = next(run.glob("train_tiny_*.log")).read_text()
    assert f"stopped by {sig.name} at iteration {stopped}" in log
    if sig != signal.SIGTERM:
        return
    res = run_checked(TRAIN + ["-opt", str(cfg), "--resume", "auto", "--stop-after", "1"], cwd=tmp_path,
                      env=run_env(), timeout=120)
    assert f"iter: {stopped} (" in res.stderr and latest_complete(run).iteration == stopped + 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_the_whole_process_group_reaches_the_loader_workers_too_and_still_saves(tmp_path, sig, spawn):
    """Ctrl-C or a closed terminal, `kill -- -PGID`, `pkill -f train.py` and Slurm's scancel signal the DataLoader
    workers as well; they leave the stop to the main process, which finishes the iteration and saves."""
    cfg = _config(tmp_path, workers=2)
    proc = spawn(TRAIN + ["-opt", str(cfg)], tmp_path)
    proc.wait_for(r"iter:\s+2, lr:")
    os.killpg(proc.p.pid, sig)                    # the session's group: the main process and its workers
    assert proc.finish() == 4, proc.explain(f"expected exit code 4 after {sig.name} to the process group")
    m = re.search(rf"training stopped by {sig.name} at iteration (\d+); its checkpoint is saved", proc.output)
    assert m and "Traceback" not in proc.output, proc.output[-3000:]
    unit = latest_complete(tmp_path / "experiments" / "tiny")
    assert unit is not None and unit.iteration == int(m.group(1)) >= 2


def _held_at_checkpoint_2(tmp_path: Path, spawn):
    """A training held inside the checkpoint of iteration 2 (a test hook), so signals arrive mid-stop."""
    cfg = _config(tmp_path, save_checkpoint_freq=2)
    env = run_env()
    env[HANG_ENV] = "2"
    proc = spawn(TRAIN + ["-opt", str(cfg)], tmp_path, env)
    marker = tmp_path / "experiments" / "tiny" / "hang_2.marker"
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.p.poll() is None and time.time() < deadline, proc.explain("never held at the checkpoint of 2")
        time.sleep(0.1)
    return proc


@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_while_stopping_exits_at_once(tmp_path, spawn, first):
    """The first signal arrives while a checkpoint is being written; a SIGTERM after it ends the process."""
    proc = _held_at_checkpoint_2(tmp_path, spawn)
    proc.p.send_signal(first)
    again = "send it again to exit at once" if first == signal.SIGTERM else "Ctrl-C or SIGTERM exits at once"
    proc.wait_for(f"{first.name} received: finishing this iteration and saving a checkpoint; {again}")
    proc.p.send_signal(signal.SIGTERM)
    assert proc.finish(timeout=30) == -signal.SIGTERM, proc.explain("expected the SIGTERM to end it")


def test_repeated_sighup_still_ends_in_a_saved_checkpoint(tmp_path, spawn):
    """The parent-death signal comes once per thread of the dead command, possibly after the first one was
    handled: the repeats, sent while the training finishes its iteration and saves, must not end it unsaved."""
    cfg = _config(tmp_path)
    proc = spawn(TRAIN + ["-opt", str(cfg)], tmp_path)
    proc.wait_for(r"iter:\s+1, lr:")
    proc.p.send_signal(signal.SIGHUP)
    proc.wait_for("SIGHUP received: finishing this iteration")
    for _ in range(3):
        proc.p.send_signal(signal.SIGHUP)
        time.sleep(0.02)
    assert proc.finish(timeout=120) == 4, proc.explain("expected exit code 4 after repeated SIGHUPs")
    m = re.search(r"training stopped by SIGHUP at iteration (\d+); its checkpoint is saved", proc.output)
    assert m, proc.output[-2000:]
    assert latest_complete(tmp_path / "experiments" / "tiny").iteration == int(m.group(1))


@pytest.mark.slow
def test_torchrun_ranks_stop_together_when_one_rank_is_signalled(tmp_path, spawn):
    cfg = _config(tmp_path)
    proc = spawn(torchrun(2, TRAIN[1], "-opt", cfg, "--launcher", "pytorch", log_dir=tmp_path / "logs"), tmp_path)
    proc.wait_for(r"iter:\s+1, lr:", timeout=180)
    rank1 = [pid for pid in _children(proc.p.pid) if "RANK=1" in _environ(pid)]
    assert len(rank1) == 1, proc.explain(f"rank 1 among torchrun's children {_children(proc.p.pid)}")
    os.kill(rank1[0], signal.SIGTERM)  # only rank 1 gets it: rank 0 must learn it and stop at the same step
    proc.finish(timeout=120)
    out = proc.output
    m = re.search(r"stopped by a signal on another rank at iteration (\d+)", out)
    assert m, proc.explain("rank 0 never reported the stop of rank 1")
    stopped = int(m.group(1))
    assert out.count(f"training stopped by a signal at iteration {stopped}; its checkpoint is saved") == 1, out
    assert out.count(f"training stopped by SIGTERM at iteration {stopped}; its checkpoint is saved") == 1, out
    run = tmp_path / "experiments" / "tiny"
    assert latest_complete(run).iteration == stopped


def test_sigkill_between_two_network_files_then_stage2_takes_the_previous_unit(tmp_path, spawn):
    from hidiff.config import options_from_text
    from hidiff.engine.stage_link import resolve_pretrained

    cfg = _config(tmp_path, save_checkpoint_freq=1)
    env = run_env()
    env[HANG_FIRST_ENV] = "2"
    proc = spawn(TRAIN + ["-opt", str(cfg)], tmp_path, env)
    run = tmp_path / "experiments" / "tiny"
    deadline = time.time() + 120
    while not (run / "hang_2.marker").exists():
        assert proc.p.poll() is None and time.time() < deadline, proc.explain("never held between the files of 2")
        time.sleep(0.1)
    proc.p.send_signal(signal.SIGKILL)
    assert proc.finish() == -signal.SIGKILL, proc.explain("expected the SIGKILL of the test")
    assert (run / "models" / "net_g_2.pth").is_file() and not (run / "models" / "net_le_2.pth").exists()

    unit = latest_complete(run)
    assert unit.iteration == 1 and unit.networks == {n: run / "models" / f"net_{n}_1.pth" for n in ("g", "le")}
    s2 = tiny_s2_options(tmp_path)
    del s2["path"]["pretrain_network_g"], s2["path"]["pretrain_network_le"]
    s2["path"]["stage1"] = "tiny"
    specs = resolve_pretrained(options_from_text(yaml.safe_dump(s2, sort_keys=False)))
    assert {n: s.path for n, s in specs.items()} == unit.networks


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _environ(pid: int) -> str:
    return "\n".join(Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0"))


def test_a_stop_whose_output_has_no_reader_still_saves_and_exits_4(tmp_path):
    """The command that piped a training's output dies, then the training is told to stop: it saves, and its
    exit code still says "stopped by a signal, checkpoint saved" (the closing line has nowhere to go)."""
    import subprocess

    cfg = _config(tmp_path)
    proc = subprocess.Popen(TRAIN + ["-opt", str(cfg)], cwd=tmp_path, env=run_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        for line in proc.stdout:
            if re.search(r"iter:\s+1, lr:", line) or time.time() > deadline:
                break
        proc.stdout.close()                          # the reader is gone
        proc.send_signal(signal.SIGHUP)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 4, code
    run = tmp_path / "experiments" / "tiny"
    log = next(run.glob("train_tiny_*.log")).read_text()
    m = re.search(r"stopped by SIGHUP at iteration (\d+) of 100000; the checkpoint of iteration \1 is saved", log)
    assert m and latest_complete(run).iteration == int(m.group(1)) >= 1, log[-2000:]
