"""Shared fixtures: repo paths and small helpers for tests."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
OPTIONS = REPO / "options"

# Tests use tiny tensors: one intra-op thread is as fast, and it keeps OpenMP from spinning
# (many times slower) when subprocesses or other jobs share the two cores.
torch.set_num_threads(1)


@pytest.fixture
def repo() -> Path:
    return REPO


def run_env() -> dict:
    """Environment for subprocesses that import hidiff from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


PY = sys.executable
