"""Synchronised wall-clock latency: warm-up calls, then N timed calls; median and spread."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, List

import torch


@dataclass
class Timing:
    """Latency statistics in milliseconds over ``runs`` timed calls (after ``warmup`` untimed ones)."""

    median_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    mean_ms: float
    runs: int
    warmup: int
    samples_ms: List[float]
    cpu_ms: float  # process CPU time per call (all threads), less sensitive to contention than wall time

    def as_dict(self) -> dict:
        return asdict(self)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], *, device: torch.device | str = "cpu", warmup: int = 1,
              runs: int = 5) -> Timing:
    """Time ``fn()``; every sample is bracketed by device synchronisation."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"time_call: expected runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples: List[float] = []
    cpu0 = time.process_time()
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        samples.append((time.perf_counter() - t0) * 1e3)
    cpu_ms = (time.process_time() - cpu0) * 1e3 / runs
    if len(samples) >= 2:
        q = statistics.quantiles(samples, n=4, method="inclusive")
        iqr = q[2] - q[0]
    else:
        iqr = 0.0
    return Timing(median_ms=statistics.median(samples), min_ms=min(samples), max_ms=max(samples), iqr_ms=iqr,
                  mean_ms=statistics.fmean(samples), runs=runs, warmup=warmup,
                  samples_ms=[round(s, 3) for s in samples], cpu_ms=cpu_ms)
