"""benchmarks/speed.py: which cases run, how they are timed, what the memory column holds."""
from __future__ import annotations

import argparse
import importlib.util

import pytest

from conftest import REPO


def _speed():
    spec = importlib.util.spec_from_file_location("speed_benchmark", REPO / "benchmarks" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(only=None, skip_720p=False):
    return argparse.Namespace(only=only, skip_720p=skip_720p, runs=5, train_runs=3)


def test_every_case_is_timed_after_a_warm_up_call():
    """infer_720p timed its first, cold call (warm-up 0)."""
    assert all(c["warmup"] >= 1 for c in _speed().cases(_args()))


def test_skip_720p_holds_with_only_and_a_contradiction_is_refused():
    speed = _speed()
    assert [c["key"] for c in speed.cases(_args(skip_720p=True))] == ["infer_256", "train_s1", "train_s2"]
    assert [c["key"] for c in speed.cases(_args(only="train_s1, infer_256"))] == ["infer_256", "train_s1"]
    assert [c["key"] for c in speed.cases(_args(only="infer_256", skip_720p=True))] == ["infer_256"]
    with pytest.raises(ValueError, match="--skip-720p leaves out infer_720p, which --only asks for"):
        speed.cases(_args(only="infer_720p,train_s1", skip_720p=True))
    with pytest.raises(ValueError, match="--only: unknown case.* infer_1080p"):
        speed.cases(_args(only="infer_1080p"))
    with pytest.raises(SystemExit) as exc:
        speed.main(["--only", "infer_720p", "--skip-720p"])
    assert exc.value.code == 2


def test_the_memory_column_is_named_for_the_device():
    """Under --device cuda the column 'peak RSS GB' held CUDA allocated bytes."""
    speed = _speed()
    row = {"title": "t", "path": "fast", "threads": 1, "load_average_before": None, "load_average_after": None,
           "latency": {"median_ms": 1.0, "min_ms": 1.0, "max_ms": 1.0, "cpu_ms": 1.0},
           "memory": {"cuda_peak_allocated_bytes": 3e9, "cuda_peak_reserved_bytes": 4e9}}
    cuda = speed.table([row], "m", "cuda")
    assert "| peak alloc GB |" in cuda and "RSS" not in cuda and "| 3.00 |" in cuda
    cpu = speed.table([{**row, "memory": {"peak_rss_bytes": 2e9}}], "m", "cpu")
    assert "| peak RSS GB |" in cpu and "| 2.00 |" in cpu


def test_rounds_alternate_and_each_round_gives_its_own_ratio():
    """--plain timed each pair once, one after the other: a change of load between the two was the ratio."""
    speed = _speed()
    rows = [{"title": "inference 256x256", "path": p, "round": k, "latency": {"median_ms": ms}}
            for k, p, ms in [(1, "fast", 100.0), (1, "plain", 200.0), (2, "plain", 330.0), (2, "fast", 110.0),
                             (3, "fast", 90.0)]]             # round 3 without its plain half: no ratio
    assert speed.speedups(rows) == {"inference 256x256": [2.0, 3.0]}
    for argv in (["--rounds", "3"], ["--plain", "--rounds", "0"]):
        with pytest.raises(SystemExit) as exc:
            speed.main(argv)
        assert exc.value.code == 2
