"""Gradient accumulation: 2 micro-batches of 1 give the gradient of one batch of 2."""
from __future__ import annotations

import torch
import yaml

from engine_tiny_run import tiny_options, write_pairs
from hidiff.config import options_from_text
from hidiff.utils.checkpoint import safe_load
from hidiff.engine.trainer import Trainer




def _run(tmp_path, name, batch, accum, channels_last=False):
    opts = tiny_options(tmp_path, name=name, datasets={"train": {"batch_size_per_gpu": batch}},
                        train={"total_iter": 1, "grad_accum_steps": accum, "use_grad_clip": False,
                               "channels_last": channels_last, "optim_total": {"type": "SGD", "lr": 1.0}},
                        logger={"save_checkpoint_freq": 1, "print_freq": 1})
    res = Trainer(options_from_text(yaml.safe_dump(opts, sort_keys=False))).fit()
    log = next(res.experiment_dir.glob("train_*.log")).read_text()
    return safe_load(res.experiment_dir / "models" / "net_g_1.pth")["params"], log


def test_accumulation_matches_the_larger_batch(tmp_path):
    write_pairs(tmp_path / "data")
    whole, _ = _run(tmp_path, "whole", batch=2, accum=1)
    accum, log = _run(tmp_path, "accum", batch=1, accum=2)
    assert "batch per process 1 x 1 processes x 2 accumulation = global batch 2" in log
    for k in whole:
        torch.testing.assert_close(accum[k], whole[k], rtol=1e-5, atol=1e-6, msg=k)
    half, _ = _run(tmp_path, "half", batch=1, accum=1)  # the comparison is sensitive: half the batch differs
    assert any(not torch.allclose(half[k], whole[k], rtol=1e-5, atol=1e-6) for k in whole)
    # channels_last memory format changes the layout, not the maths
    cl, _ = _run(tmp_path, "cl", batch=2, accum=1, channels_last=True)
    for k in whole:
        torch.testing.assert_close(cl[k], whole[k], rtol=1e-4, atol=1e-5, msg=k)


def test_gradient_clipping_follows_its_two_options(tmp_path):
    """docs/quirks.md S11: the official Swintormer trainer ignored use_grad_clip and hard-wired 0.01. One SGD step
    (lr 1) from the same start: two clip norms differ by a step of exactly their difference along the gradient,
    and without clipping the step is the whole gradient."""
    write_pairs(tmp_path / "data")

    def step(name, **train):
        opts = tiny_options(tmp_path, name=name,
                            train={"total_iter": 1, "optim_total": {"type": "SGD", "lr": 1.0}, **train},
                            logger={"save_checkpoint_freq": 1, "print_freq": 1})
        res = Trainer(options_from_text(yaml.safe_dump(opts, sort_keys=False))).fit()
        nets = sorted((res.experiment_dir / "models").glob("net_*_1.pth"))  # net_g and net_le: clipped together
        assert len(nets) == 2
        return torch.cat([w.flatten().double() for f in nets for _, w in sorted(safe_load(f)["params"].items())])

    off = step("off", use_grad_clip=False, grad_clip_norm=0.01)
    small = step("small", use_grad_clip=True, grad_clip_norm=0.01)
    large = step("large", use_grad_clip=True, grad_clip_norm=0.02)
    between = small - large  # = (0.02 - 0.01) * g / |g|
    whole = small - off      # = (1 - 0.01 / |g|) * g
    assert abs(float(between.norm()) - 0.01) < 1e-5
    assert float(whole.norm()) > 0.03  # |g| well above both norms, so both clips were active
    cos = float(torch.dot(between, whole) / (between.norm() * whole.norm()))
    assert cos > 1 - 1e-6
