"""Throughput of independent trainings side by side against one training on all the threads.

A small CPU runs one training's small operations poorly on several threads (they wait for each other), so
independent runs (the seeds of an ablation) may get more done side by side, each on its share of the
threads (``retrain_default.py --ablation-jobs``).  Each *phase* runs its trainings in fresh processes that
warm up, report ready, and, once all are, count from one common start the optimisation steps
(:class:`TrainStep`, as the trainer runs them) each completes within the same wall-clock window.  The two phases alternate for
``rounds`` rounds, so a change of machine load hits both alike; the figure is the ratio of samples per
second summed over a phase's processes.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence

import torch

from hidiff.profiling.machine import load_average
from hidiff.profiling.train_step import StepSpec, TrainStep

RESULT_MARK = "HIDIFF_SIDE_BY_SIDE "
READY = "HIDIFF_SIDE_BY_SIDE_READY"


@dataclass
class WindowSpec:
    """One process of a phase: the training step to run and the window to count steps in."""

    opt: str
    batch: int
    size: List[int]
    threads: int
    seconds: float
    overrides: List[str] = field(default_factory=list)
    seed: int = 0


def count_steps(spec: WindowSpec, start_line: Callable[[], str]) -> dict:
    """Warm up one step, say ready, read the common start time, count the steps completed within the window."""
    torch.set_num_threads(spec.threads)
    ts = TrainStep(StepSpec(opt=spec.opt, batch=spec.batch, size=tuple(spec.size), threads=spec.threads,
                            overrides=list(spec.overrides), seed=spec.seed))
    ts.set_data(spec.seed)
    ts.step()
    print(READY, flush=True)
    start_at = float(start_line())
    while time.time() < start_at:
        time.sleep(0.005)
    end = start_at + spec.seconds
    steps = 0
    while True:
        ts.step()
        if time.time() > end:
            break
        steps += 1
    return {"steps": steps, "seconds": spec.seconds, "threads": torch.get_num_threads()}


def run_phase(opt: str, batch: int, size: Sequence[int], *, jobs: int, threads: int, seconds: float,
              overrides: Sequence[str] = (), timeout: float = 900.0) -> dict:
    """``jobs`` processes with ``threads`` threads each, counting steps in one common window."""
    procs = []
    for k in range(jobs):
        spec = WindowSpec(opt=opt, batch=batch, size=list(size), threads=threads, seconds=seconds,
                          overrides=list(overrides), seed=k)
        procs.append(subprocess.Popen([sys.executable, "-m", "hidiff.profiling.side_by_side",
                                       json.dumps(asdict(spec))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": str(threads)}))
    try:
        for proc in procs:                       # every worker has built its model and taken a warm-up step
            line = proc.stdout.readline()
            if line.strip() != READY:
                proc.wait(timeout=60)
                raise RuntimeError(f"side-by-side worker failed before it was ready (exit code {proc.returncode}):"
                                   "\n" + "\n".join(proc.stderr.read().strip().splitlines()[-15:]))
        start_at = time.time() + 0.5
        for proc in procs:
            proc.stdin.write(f"{start_at!r}\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARK)]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"side-by-side worker failed (exit code {proc.returncode}):\n"
                                   + "\n".join((err or out).strip().splitlines()[-15:]))
            results.append(json.loads(lines[-1][len(RESULT_MARK):]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    steps = sum(r["steps"] for r in results)
    return {"jobs": jobs, "threads_each": threads, "steps": [r["steps"] for r in results],
            "threads": [r["threads"] for r in results],
            "samples_per_s": steps * batch / seconds, "steps_per_s": steps / seconds}


def compare(opt: str, batch: int, size: Sequence[int], *, threads: int, jobs: int, seconds: float, rounds: int,
            overrides: Sequence[str] = (), log=None) -> dict:
    """Alternate one training on ``threads`` threads with ``jobs`` trainings on ``threads // jobs`` each."""
    share = max(1, threads // jobs)
    rows = []
    for r in range(rounds):
        order = [("one", 1, threads), ("side by side", jobs, share)]
        if r % 2:
            order.reverse()
        row = {"round": r + 1, "load_before": load_average()}
        for label, n, t in order:
            row[label] = run_phase(opt, batch, size, jobs=n, threads=t, seconds=seconds, overrides=overrides)
            if log:
                log(f"round {r + 1}: {label}: {row[label]['samples_per_s']:.2f} samples/s "
                    f"({n} x {t} thread(s), steps {row[label]['steps']})")
        row["ratio"] = row["side by side"]["samples_per_s"] / max(row["one"]["samples_per_s"], 1e-12)
        row["load_after"] = load_average()
        rows.append(row)
    return {"opt": opt, "batch": batch, "size": list(size), "threads": threads, "jobs": jobs,
            "threads_each": share, "seconds": seconds, "rounds": rows,
            "median_ratio": statistics.median(r["ratio"] for r in rows)}


def format_report(result: dict, machine: str) -> str:
    """Markdown table of the rounds and the median ratio."""
    lines = [f"{result['opt']}, batch {result['batch']} of {result['size'][0]}x{result['size'][1]}, "
             f"{result['seconds']:g} s windows; {machine}", "",
             f"| round | one training, {result['threads']} threads: samples/s | {result['jobs']} side by side, "
             f"{result['threads_each']} thread(s) each: samples/s | ratio | load before / after |",
             "|---:|---:|---:|---:|---|"]
    for r in result["rounds"]:
        lines.append(f"| {r['round']} | {r['one']['samples_per_s']:.2f} | {r['side by side']['samples_per_s']:.2f} "
                     f"| {r['ratio']:.2f}x | {r['load_before']} / {r['load_after']} |")
    lines.append(f"\nmedian ratio: {result['median_ratio']:.2f}x")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Worker entry: ``python -m hidiff.profiling.side_by_side SPEC_JSON``."""
    args = list(sys.argv[1:] if argv is None else argv)
    result = count_steps(WindowSpec(**json.loads(args[0])), sys.stdin.readline)
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
