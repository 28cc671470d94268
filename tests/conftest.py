"""Shared fixtures: repo paths and small helpers for tests."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
OPTIONS = REPO / "options"

# Two CPU cores: keep torch from oversubscribing when tests spawn subprocesses.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
