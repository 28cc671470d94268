"""Shared fixtures: repo paths, small helpers for tests, and the isolation that makes every test deterministic."""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
OPTIONS = REPO / "options"

# Tests use tiny tensors: one intra-op thread is as fast, and it keeps OpenMP from spinning
# (many times slower) when subprocesses or other jobs share the two cores.
torch.set_num_threads(1)
THREADS = torch.get_num_threads()


def needs_shipped_default_model():
    """Skip marker for tests of the packaged default model, in a copy of hidiff that ships none."""
    from hidiff.runners.default_model import ships_default_model
    return pytest.mark.skipif(not ships_default_model(), reason="no default model ships yet (docs/default_model.md)")


def _seed_all(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(autouse=True, scope="module")
def _seeded_module() -> None:
    """Module-scoped fixtures draw their random data from a seeded state, not from what earlier modules left."""
    _seed_all()


@pytest.fixture(autouse=True)
def _isolated_global_state():
    """Each test starts from the same global state whatever ran before it (alone, in any order, in the suite),
    and what it changes in that state does not leak into later tests.

    The random generators are seeded, so unseeded ``torch.rand`` inputs are the same in every run; torch's
    process-wide switches (threads, default dtype, deterministic algorithms, cuDNN benchmark, grad mode), the
    environment and the working directory are put back afterwards (an in-process ``Trainer`` sets some).
    """
    _seed_all()
    saved_env = dict(os.environ)
    cwd = os.getcwd()
    dtype = torch.get_default_dtype()
    det, det_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    bench = torch.backends.cudnn.benchmark
    grad = torch.is_grad_enabled()
    yield
    torch.set_num_threads(THREADS)
    torch.set_default_dtype(dtype)
    torch.use_deterministic_algorithms(det, warn_only=det_warn)
    torch.backends.cudnn.benchmark = bench
    torch.set_grad_enabled(grad)
    if dict(os.environ) != saved_env:
        os.environ.clear()
        os.environ.update(saved_env)
    if os.getcwd() != cwd:
        os.chdir(cwd)


@pytest.fixture
def repo() -> Path:
    return REPO


def run_env() -> dict:
    """Environment for subprocesses that import hidiff from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # one thread, like this process (above), whatever the caller's OMP_NUM_THREADS: tests compare a subprocess's
    # weights bitwise with an in-process run, and float sums change with the thread count
    env["OMP_NUM_THREADS"] = "1"
    return env


PY = sys.executable
