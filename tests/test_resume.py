"""Exact resume: 20 iterations straight == 10 + resume + 10, bitwise; SIGKILL mid-save; config changes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, run_env
from engine_tiny_run import tiny_options, tiny_s2_options, write_pairs
from hidiff.config import options_from_text
from hidiff.utils.checkpoint import safe_load
from hidiff.engine.checkpoint_store import HANG_ENV
from hidiff.engine.trainer import Trainer
from hidiff.errors import ConfigError
from procs import explain, run_checked


def _opts(d: dict):
    return options_from_text(yaml.safe_dump(d, sort_keys=False))


def _assert_same_files(dir_a: Path, dir_b: Path, names: list[str]) -> None:
    for name in names:
        a, b = safe_load(dir_a / name), safe_load(dir_b / name)
        assert a.keys() == b.keys(), name
        for key in a:
            for k in a[key]:
                assert torch.equal(a[key][k], b[key][k]), f"{name}[{key}][{k}] differs"


def _assert_same_optimizer(sa: dict, sb: dict) -> None:
    for pid, st in sa["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, sb["optimizer"]["state"][pid][k]), f"optimizer state {pid}.{k} differs"


def test_twenty_straight_equals_ten_resume_ten_bitwise(tmp_path):
    """Stage 2 (torch RNG in the loop), progressive crops, EMA, clipping, validation, epoch boundaries."""
    write_pairs(tmp_path / "data")
    base = tiny_s2_options(
        tmp_path, with_val=True,
        datasets={"train": {"mini_batch_sizes": [2, 1], "iters": [6, 14], "gt_sizes": [24, 32]}},
        train={"ema_decay": 0.9}, val={"val_freq": 10, "max_images": 2},
        logger={"save_checkpoint_freq": 10, "print_freq": 5})
    straight = Trainer(_opts({**base, "name": "straight"})).fit()
    assert (straight.start_iter, straight.last_iter) == (0, 20)

    first = Trainer(_opts({**base, "name": "resumed"}), stop_after=10).fit()
    assert first.last_iter == 10
    second = Trainer(_opts({**base, "name": "resumed"}), resume="auto").fit()
    assert (second.start_iter, second.last_iter) == (10, 20)

    a, b = straight.experiment_dir, second.experiment_dir
    nets = [f"net_{n}_20.pth" for n in ("g", "le_dm", "d")]
    _assert_same_files(a / "models", b / "models", nets)
    sa, sb = safe_load(a / "training_states" / "20.state"), safe_load(b / "training_states" / "20.state")
    _assert_same_optimizer(sa, sb)
    assert sa["sampler"] == sb["sampler"] and sa["best"] == sb["best"]
    assert second.best == straight.best and second.last_validation == straight.last_validation
    # sanity: training moved the weights between the two checkpoints
    w10, w20 = safe_load(a / "models" / "net_g_10.pth"), safe_load(a / "models" / "net_g_20.pth")
    assert any(not torch.equal(w10["params"][k], w20["params"][k]) for k in w10["params"])
    assert "params_ema" in w20


def test_changed_config_is_refused_unless_allowed(tmp_path):
    write_pairs(tmp_path / "data")
    base = tiny_options(tmp_path, train={"total_iter": 4}, logger={"save_checkpoint_freq": 2})
    Trainer(_opts(base), stop_after=2).fit()
    changed = tiny_options(tmp_path, train={"total_iter": 4, "optim_total": {"type": "AdamW", "lr": 5e-4}},
                           logger={"save_checkpoint_freq": 2})
    with pytest.raises(ConfigError) as info:
        Trainer(_opts(changed), resume="auto").fit()
    msg = str(info.value)
    assert "-  optim_total: {type: AdamW, lr: 0.001}" in msg and "+  optim_total: {type: AdamW, lr: 0.0005}" in msg
    assert "--allow-config-change" in msg
    done = Trainer(_opts(changed), resume="auto", allow_config_change=True).fit()
    assert (done.start_iter, done.last_iter) == (2, 4)
    # an explicit state path works too; a finished run has nothing left to train
    state = tmp_path / "experiments" / "tiny" / "training_states" / "4.state"
    again = Trainer(_opts(changed), resume=str(state)).fit()
    assert (again.start_iter, again.last_iter) == (4, 4)


@pytest.mark.parametrize("change", ["image removed", "enlarge ratio"])
def test_resume_on_changed_training_data_is_refused_unless_allowed(tmp_path, change):
    """Training images added or removed (or dataset_enlarge_ratio changed) since the checkpoint: the sample order
    cannot continue exactly.  The sampler's refusal held even with --allow-config-change, whose own message had
    offered it; now it names the set and both ways out, and the flag continues the epoch on the new data."""
    write_pairs(tmp_path / "data", n=9)
    base = tiny_options(tmp_path, train={"total_iter": 4}, logger={"save_checkpoint_freq": 1, "print_freq": 1})
    Trainer(_opts(base), stop_after=1).fit()
    if change == "image removed":
        for side in ("input", "target"):
            (tmp_path / "data" / side / "im08.png").unlink()
        changed, what = base, "dataset_len 9 -> 8"
    else:
        changed = tiny_options(tmp_path, train={"total_iter": 4}, logger={"save_checkpoint_freq": 1, "print_freq": 1},
                               datasets={"train": {"dataset_enlarge_ratio": 2}})
        what = "enlarge_ratio 1 -> 2"
    run = tmp_path / "experiments" / "tiny"
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(ConfigError) as info:   # a changed option is refused first by the config check
        Trainer(_opts(changed), resume="auto").fit()
    msg = str(info.value)
    if change == "image removed":
        assert f"the training data changed since this checkpoint ({what}; datasets.train 'tinytrain')" in msg
        assert "--resume none" in msg and "1.state" in msg
    assert "--allow-config-change" in msg
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before      # nothing written or moved
    done = Trainer(_opts(changed), resume="auto", allow_config_change=True).fit()
    assert (done.start_iter, done.last_iter) == (1, 4)
    log = "\n".join(p.read_text() for p in run.glob("train_tiny_*.log"))
    assert f"resume on other training data ({what}; --allow-config-change)" in log


def test_sigkill_during_checkpoint_write_then_resume(tmp_path):
    """Kill -9 while a checkpoint set is half written; resume must take the previous complete set."""
    write_pairs(tmp_path / "data")
    # 4 iterations an epoch (8 pairs, batch 2): the resumed run starts mid-epoch and crosses into the next one
    opts = tiny_options(tmp_path, name="killed", train={"total_iter": 6},
                        logger={"save_checkpoint_freq": 2, "print_freq": 2})
    cfg = tmp_path / "killed.yml"
    cfg.write_text(yaml.safe_dump(opts, sort_keys=False))
    env = run_env()
    env[HANG_ENV] = "4"
    exp = tmp_path / "experiments" / "killed"
    out = tmp_path / "killed_run.log"  # a file, not a pipe: a pipe nobody reads can fill up and stall the run
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), "-opt", str(cfg)], env=env,
                                stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (exp / "hang_4.marker").exists():
            assert proc.poll() is None, explain(proc.args, proc.returncode, out.read_text(), "",
                                                "the run ended before the checkpoint at iteration 4")
            assert time.monotonic() < deadline, explain(proc.args, None, out.read_text(), "",
                                                        "the run never reached the checkpoint at iteration 4")
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:  # the trainer's whole process group (data loader workers too), also after a failed assertion
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, explain(proc.args, proc.returncode, out.read_text(), "",
                                                       "expected the SIGKILL of the test")
    assert (exp / "models" / "net_g_4.pth").is_file()        # network files of 4 written ...
    assert not (exp / "training_states" / "4.state").exists()  # ... but not its state: set incomplete
    # a temp file left by a writer killed mid-write must not confuse resume either
    (exp / "training_states" / ".4.state.x1y2.tmp").write_bytes(b"\x80\x02partial")

    env.pop(HANG_ENV)
    res = run_checked([sys.executable, REPO / "scripts" / "train.py", "-opt", cfg, "--resume", "auto"],
                      env=env, cwd=tmp_path, timeout=300)
    assert "Resuming training from epoch: 0, iter: 2" in res.stderr, res.stderr[-2000:]
    assert not list((exp / "training_states").glob(".*.tmp"))
    # the resumed run ends exactly where an uninterrupted one does
    straight = Trainer(_opts({**opts, "name": "straight"})).fit()
    _assert_same_files(exp / "models", straight.experiment_dir / "models", ["net_g_6.pth", "net_le_6.pth"])
