"""A real 2-process torchrun (gloo, CPU) run against a single process on the same global batch."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, run_env
from engine_tiny_run import tiny_options, write_pairs
from hidiff.config import options_from_text
from hidiff.utils.checkpoint import safe_load
from hidiff.engine.seeding import seed_everything
from hidiff.models import build_model
from procs import run_checked, torchrun

LR = 0.5
pytestmark = pytest.mark.slow


def _config(tmp_path: Path, name: str, batch: int) -> Path:
    # plain SGD without clipping: w1 = w0 - LR * grad, so the saved weights reveal the gradient
    opts = tiny_options(tmp_path, with_val=True, name=name,
                        datasets={"train": {"batch_size_per_gpu": batch}},
                        train={"total_iter": 3, "use_grad_clip": False, "optim_total": {"type": "SGD", "lr": LR}},
                        val={"val_freq": 3, "max_images": 5},
                        logger={"save_checkpoint_freq": 1, "print_freq": 1,
                                                     "use_tb_logger": True})
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(opts, sort_keys=False))
    return path


def test_two_process_torchrun_matches_single_process(tmp_path):
    write_pairs(tmp_path / "data")
    env = run_env()
    ddp_cfg, single_cfg = _config(tmp_path, "ddp", 2), _config(tmp_path, "single", 4)
    run_checked(torchrun(2, REPO / "scripts" / "train.py", "-opt", ddp_cfg, "--launcher", "pytorch",
                         "--local-rank=0",  # legacy argument: accepted and ignored
                         log_dir=tmp_path / "torchrun"), env=env, cwd=tmp_path, timeout=300)
    run_checked([sys.executable, REPO / "scripts" / "train.py", "-opt", single_cfg], env=env, cwd=tmp_path,
                timeout=300)

    exp = tmp_path / "experiments"
    d, s = exp / "ddp", exp / "single"
    # rank 0 alone wrote files: one log, one event file, one checkpoint set per iteration
    assert len(list(d.glob("train_ddp_*.log"))) == 1
    assert len(list((d / "tb_logger").iterdir())) == 1
    assert sorted(p.name for p in (d / "training_states").iterdir()) == ["1.state", "2.state", "3.state"]
    log = next(d.glob("train_ddp_*.log")).read_text()
    assert "world size 2 (backend gloo)" in log and "global batch 4" in log

    # initial weights: the trainer seeds manual_seed + rank and builds the model (rank 0's copy is broadcast)
    options = options_from_text(single_cfg.read_text())
    seed_everything(options.manual_seed)
    w0 = {n: {k: v.detach().clone() for k, v in net.state_dict().items()}
          for n, net in build_model(options).networks().items()}
    for net in ("g", "le"):
        a = safe_load(d / "models" / f"net_{net}_1.pth")["params"]
        b = safe_load(s / "models" / f"net_{net}_1.pth")["params"]
        for k in w0[net]:
            g_ddp = (w0[net][k] - a[k]) / LR
            g_single = (w0[net][k] - b[k]) / LR
            torch.testing.assert_close(g_ddp, g_single, rtol=1e-4, atol=1e-6, msg=f"first-step grad of net_{net}.{k}")
        assert any(float((w0[net][k] - a[k]).abs().max()) > 0 for k in w0[net])
        last_a = safe_load(d / "models" / f"net_{net}_3.pth")["params"]
        last_b = safe_load(s / "models" / f"net_{net}_3.pth")["params"]
        for k in last_a:
            torch.testing.assert_close(last_a[k], last_b[k], rtol=1e-4, atol=1e-5)
    # sharded validation over 2 ranks gives the single-process number, on the same first 5 of the 8 images
    # (val.max_images was once applied per rank: 2 ranks validated 8)
    best_d = json.loads((d / "models" / "best.json").read_text())
    best_s = json.loads((s / "models" / "best.json").read_text())
    assert best_d["value"] == pytest.approx(best_s["value"], abs=1e-3)
    assert "Validation tinyval (5 images)" in log
    assert "Validation tinyval (5 images)" in next(s.glob("train_single_*.log")).read_text()


@pytest.mark.parametrize("ldm", [False, True], ids=["local", "ldm"])
def test_stage2_under_torchrun_resumes_bitwise(tmp_path, ldm):
    """Stage 2 draws its diffusion noise on each rank from that rank's generators: a 2-rank run stopped after
    iteration 1 (mid-epoch) and resumed must end with the weights of the run that went straight through,
    bit for bit, which holds only if every rank's generators and the sampler's position come back.  Both
    diffusion paths: the LDM one is where the official code wrapped networks in DDP twice (docs/quirks.md)."""
    from engine_tiny_run import tiny_s2_options

    write_pairs(tmp_path / "data")
    env = run_env()

    def config(name: str) -> Path:
        opts = tiny_s2_options(tmp_path, name=name, train={"total_iter": 3}, diffusion_schedule={"apply_ldm": ldm},
                               logger={"save_checkpoint_freq": 1, "print_freq": 1})
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump(opts, sort_keys=False))
        return path

    def train(cfg: Path, *extra: str):
        return run_checked(torchrun(2, REPO / "scripts" / "train.py", "-opt", cfg, "--launcher", "pytorch", *extra,
                                    log_dir=tmp_path / f"torchrun_{cfg.stem}_{len(extra)}"),
                           env=env, cwd=tmp_path, timeout=300)

    straight, resumed = config("straight"), config("resumed")
    train(straight)
    train(resumed, "--stop-after", "1")
    exp = tmp_path / "experiments"
    assert sorted(p.name for p in (exp / "resumed" / "training_states").iterdir()) == ["1.state"]
    state = safe_load(exp / "resumed" / "training_states" / "1.state")
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert state["config"]["diffusion_schedule"]["apply_ldm"] is ldm
    # the ranks' generators differ (seeded manual_seed + rank), so the state must hold both
    assert not torch.equal(state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"])
    again = train(resumed, "--resume", "auto")
    assert "Resuming training from epoch" in again.stdout + again.stderr

    log = next((exp / "straight").glob("train_straight_*.log")).read_text()
    assert "world size 2 (backend gloo)" in log and "HI_Diff_S2" in log
    for net in ("g", "le_dm", "d"):
        a = safe_load(exp / "straight" / "models" / f"net_{net}_3.pth")["params"]
        b = safe_load(exp / "resumed" / "models" / f"net_{net}_3.pth")["params"]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"net_{net}.{k} differs after the resume"
    # the networks trained: stage 2's denoiser moved from its first checkpoint
    first = safe_load(exp / "straight" / "models" / "net_d_1.pth")["params"]
    last = safe_load(exp / "straight" / "models" / "net_d_3.pth")["params"]
    assert any(not torch.equal(first[k], last[k]) for k in first)


def test_a_run_resumed_on_fewer_processes_says_what_changes(tmp_path):
    """2 ranks stopped after iteration 1, resumed by one process: allowed, approximately (the order and random
    streams cannot continue bitwise), and the warning says the global batch halves while the schedule runs on."""
    write_pairs(tmp_path / "data")
    cfg = _config(tmp_path, "ws", 2)
    run_checked(torchrun(2, REPO / "scripts" / "train.py", "-opt", cfg, "--launcher", "pytorch", "--stop-after", "1",
                         log_dir=tmp_path / "torchrun"), env=run_env(), cwd=tmp_path, timeout=300)
    one = run_checked([sys.executable, REPO / "scripts" / "train.py", "-opt", cfg, "--resume", "auto"],
                      env=run_env(), cwd=tmp_path, timeout=300)
    out = one.stdout + one.stderr
    assert ("resume with 1 processes instead of 2: the data order and random streams continue approximately, not "
            "bitwise, and the global batch is 2 instead of 4") in out, out[-3000:]
    assert sorted(p.name for p in (tmp_path / "experiments" / "ws" / "training_states").iterdir()) == \
        ["1.state", "2.state", "3.state"]
