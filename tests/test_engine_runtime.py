"""RNG capture/restore, the AMP policy on CPU, distributed helpers without a process group."""
import io
import logging
import random

import numpy as np
import pytest
import torch

from hidiff.engine.amp import Amp
from hidiff.engine.distributed import all_gather_objects, init_distributed, reduce_mean_dict
from hidiff.engine.nonfinite import NonFiniteGuard, NonFiniteLossError
from hidiff.engine.seeding import capture_rng_state, restore_rng_state, seed_everything
from hidiff.errors import ConfigError


def _draw():
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


def test_rng_state_round_trip_through_weights_only_file():
    seed_everything(5)
    _draw()
    np.random.randn()  # leaves a cached gaussian in numpy's legacy state
    buf = io.BytesIO()
    torch.save(capture_rng_state(), buf)
    expected = [_draw() for _ in range(3)]
    seed_everything(99)
    buf.seek(0)
    restore_rng_state(torch.load(buf, weights_only=True))
    assert [_draw() for _ in range(3)] == expected


def test_amp_on_cpu_falls_back_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="hidiff"):
        amp = Amp(True, "bf16", torch.device("cpu"))
    assert not amp.enabled and amp.name == "fp32" and "fp32" in caplog.text
    with pytest.raises(ConfigError, match="train.amp.dtype"):
        Amp(True, "fp8", torch.device("cpu"))
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=1.0)
    with amp.autocast():
        loss = (p * 2).sum()
    amp.backward(loss)
    amp.unscale_(opt)
    amp.step(opt, skip=True)
    assert torch.equal(p.detach(), torch.ones(2))
    amp.step(opt, skip=False)
    assert torch.equal(p.detach(), -torch.ones(2))
    assert amp.state_dict() == {}


def test_single_process_distributed_helpers(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed("auto", num_gpu=0)
    assert info.world_size == 1 and info.is_main and info.device.type == "cpu"
    assert reduce_mean_dict({"a": torch.tensor(2.0)}, info.device) == {"a": 2.0}
    assert all_gather_objects({"x": 1}) == [{"x": 1}]
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="--launcher pytorch"):
        init_distributed("none", num_gpu=0)
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="RANK"):
        init_distributed("pytorch", num_gpu=0)


def test_nonfinite_guard():
    g = NonFiniteGuard(3)
    assert g.record(False, 1) and g.record(False, 2) and not g.record(True, 3)
    assert g.total == 2 and g.consecutive == 0
    g.record(False, 4)
    g.record(False, 5)
    with pytest.raises(NonFiniteLossError, match="3 consecutive"):
        g.record(False, 6)
