"""Training throughput of two arrangements of the CPU, timed in alternation (``benchmarks/side_by_side.py``).

An *arrangement* is a number of independent training processes, the threads each gets, and whether glibc's
malloc keeps freed memory (:mod:`hidiff.utils.malloc`, the trainer's default on a CPU).  Two comparisons:

* ``jobs``: one training on all the threads against independent trainings (an ablation's seeds) side by
  side, each on its share (``retrain_default.py --ablation-jobs``, ``hidiff-sweep --jobs``);
* ``malloc``: one training with the system's malloc against one whose freed memory is kept;
* ``official``: the official code's formulation (``plain``, see :mod:`hidiff.profiling.train_step`) with
  the system's malloc against hidiff's default training path (``fast``, freed memory kept);
* ``official-ckpt``: the same reference against hidiff's default path with activation checkpointing
  (``train.checkpoint_levels``, by default of every U-Net stage: ``[1, 2, 3, 4, refinement]``), the memory
  option.
* ``recompute``: hidiff's default path with the feed-forward's depthwise outputs and gate stored
  (``train.recompute_ffn: false``) against the default, which recomputes them in backward;
* ``branches``: hidiff's default path against the same with ``train.recompute_branches`` (each block's
  branches keep only their matrix products' outputs); ``official-branches``: the official formulation
  against the latter.

Each *phase* runs its processes fresh; they warm up (one step), report ready and, once all are, count from
one common start the optimisation steps (:class:`TrainStep`, as the trainer runs them) each completes in
the same wall-clock window, with the CPU time and page faults of those steps.  A process's rate is its
finished steps over the wall time they took (see :func:`count_window`).  The two phases alternate for
``rounds`` rounds, so a change of machine load hits both alike; the figure is the ratio of samples per
second summed over a phase's processes.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import torch

from hidiff.profiling.machine import load_average
from hidiff.profiling.profiler import worker_result
from hidiff.profiling.train_step import ALL_STAGES, StepSpec, TrainStep, every_stage
from hidiff.utils.malloc import keep_freed_memory

RESULT_MARK = "HIDIFF_SIDE_BY_SIDE "
COMPARISONS = ("jobs", "malloc", "official", "official-ckpt", "recompute", "branches", "official-branches")
READY = "HIDIFF_SIDE_BY_SIDE_READY"


@dataclass(frozen=True)
class Arrangement:
    """``jobs`` training processes of ``threads`` threads each; ``keep_memory``: malloc keeps freed memory;
    ``formulation``: of :data:`hidiff.profiling.train_step.FORMULATIONS`; ``checkpoint_levels``: as
    ``train.checkpoint_levels`` (none if empty); ``overrides``: option overrides of this arrangement."""

    label: str
    jobs: int
    threads: int
    keep_memory: bool = True
    formulation: str = "fast"
    checkpoint_levels: Tuple[Union[int, str], ...] = ()
    overrides: Tuple[str, ...] = ()


def arrangements(kind: str, threads: int, jobs: int,
                 checkpoint_levels: Sequence[Union[int, str]] = ALL_STAGES) -> Tuple[Arrangement, Arrangement]:
    """The (reference, candidate) pair of comparison ``kind`` (one of :data:`COMPARISONS`; ``official-ckpt``'s
    candidate checkpoints ``checkpoint_levels``)."""
    if kind == "jobs":
        share = max(1, threads // jobs)
        return (Arrangement(f"one training, {threads} threads", 1, threads),
                Arrangement(f"{jobs} side by side, {share} thread(s) each", jobs, share))
    if kind == "malloc":
        return (Arrangement(f"system malloc, {threads} threads", 1, threads, keep_memory=False),
                Arrangement(f"freed memory kept, {threads} threads", 1, threads, keep_memory=True))
    if kind == "recompute":
        return (Arrangement(f"hidiff default, feed-forward stored, {threads} threads", 1, threads,
                            overrides=("train.recompute_ffn=false",)),
                Arrangement(f"hidiff default (feed-forward recomputed), {threads} threads", 1, threads))
    branches = Arrangement(f"hidiff default + branches recomputed, {threads} threads", 1, threads,
                           overrides=("train.recompute_branches=true",))
    if kind == "branches":
        return Arrangement(f"hidiff default, {threads} threads", 1, threads), branches
    official = Arrangement(f"official formulation, system malloc, {threads} threads", 1, threads,
                           keep_memory=False, formulation="plain")
    if kind == "official":
        return official, Arrangement(f"hidiff default, {threads} threads", 1, threads)
    if kind == "official-branches":
        return official, branches
    if kind == "official-ckpt":
        which = "" if every_stage(checkpoint_levels) else f" of {', '.join(map(str, checkpoint_levels))}"
        return official, Arrangement(f"hidiff default + checkpointing{which}, {threads} threads", 1, threads,
                                     checkpoint_levels=tuple(checkpoint_levels))
    raise ValueError(f"comparison: expected one of {', '.join(COMPARISONS)}, got {kind!r}")


def count_window(step: Callable[[], object], end: float, clock: Callable[[], float] = time.time) -> dict:
    """Run ``step`` until the clock passes ``end``; the steps finished inside the window, the wall time they
    took, their CPU time and minor faults (the step that ran past ``end`` is neither counted nor charged), and
    the peak RSS.

    ``steps_per_s`` is the counted steps over their own wall time, not over the window: the window's
    unfinished last step would otherwise cost each side half a step on average, more for the side with the
    longer steps.  With no step inside the window it is one over the first step's time."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    counted = before          # the usage at the end of the last step that finished inside the window
    steps = 0
    t0 = last = clock()
    while True:
        step()
        now = clock()
        if now > end:
            break
        steps += 1
        last = now
        counted = resource.getrusage(resource.RUSAGE_SELF)
    after = resource.getrusage(resource.RUSAGE_SELF)
    counted_s = last - t0
    rate = steps / counted_s if steps else 1.0 / max(now - t0, 1e-9)
    return {"steps": steps, "counted_s": counted_s, "steps_per_s": rate,
            "user_s": counted.ru_utime - before.ru_utime, "sys_s": counted.ru_stime - before.ru_stime,
            "minor_faults": counted.ru_minflt - before.ru_minflt, "peak_rss_gib": after.ru_maxrss / 2**20}


def count_steps(spec: StepSpec, seconds: float, start_line: Callable[[], str]) -> dict:
    """Warm up one step of ``spec``, say ready, read the common start time, count the steps completed within
    the ``seconds`` window (``spec.keep_memory``: this process's malloc keeps freed memory)."""
    kept = keep_freed_memory() if spec.keep_memory else False
    torch.set_num_threads(spec.threads)
    ts = TrainStep(spec)
    ts.set_data(spec.seed)
    ts.step()
    print(READY, flush=True)
    start_at = float(start_line())
    while time.time() < start_at:
        time.sleep(0.005)
    end = start_at + seconds
    return {**count_window(ts.step, end), "seconds": seconds, "threads": torch.get_num_threads(),
            "memory_kept": kept}


def run_phase(opt: str, batch: int, size: Sequence[int], arrangement: Arrangement, *, seconds: float,
              overrides: Sequence[str] = (), timeout: float = 900.0) -> dict:
    """The arrangement's processes, counting steps in one common window."""
    procs = []
    for k in range(arrangement.jobs):
        spec = StepSpec(opt=opt, batch=batch, size=tuple(size), threads=arrangement.threads,
                        formulation=arrangement.formulation, overrides=[*overrides, *arrangement.overrides], seed=k,
                        checkpoint_levels=list(arrangement.checkpoint_levels), keep_memory=arrangement.keep_memory)
        procs.append(subprocess.Popen([sys.executable, "-m", "hidiff.profiling.side_by_side",
                                       spec.to_json(), repr(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": str(arrangement.threads)}))
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
            results.append(worker_result(proc.returncode, out, err, mark=RESULT_MARK, what="side-by-side worker"))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    steps = sum(r["steps"] for r in results)
    per_step = max(steps, 1)
    rate = sum(r["steps_per_s"] for r in results)     # each process's steps over their own wall time
    return {**asdict(arrangement), "steps": [r["steps"] for r in results],
            "counted_s": [r["counted_s"] for r in results],
            "threads_seen": [r["threads"] for r in results], "memory_kept": [r["memory_kept"] for r in results],
            "samples_per_s": rate * batch, "steps_per_s": rate,
            "user_s_per_step": sum(r["user_s"] for r in results) / per_step,
            "sys_s_per_step": sum(r["sys_s"] for r in results) / per_step,
            "minor_faults_per_step": sum(r["minor_faults"] for r in results) / per_step,
            "peak_rss_gib": max(r["peak_rss_gib"] for r in results)}


def compare(opt: str, batch: int, size: Sequence[int], pair: Tuple[Arrangement, Arrangement], *, seconds: float,
            rounds: int, overrides: Sequence[str] = (), log=None) -> dict:
    """Alternate the pair's phases for ``rounds`` rounds; ratio = candidate's samples/s over the reference's."""
    reference, candidate = pair
    rows = []
    for r in range(rounds):
        order = [("reference", reference), ("candidate", candidate)]
        if r % 2:
            order.reverse()
        row = {"round": r + 1, "load_before": load_average()}
        for key, arrangement in order:
            row[key] = run_phase(opt, batch, size, arrangement, seconds=seconds, overrides=overrides)
            if log:
                log(f"round {r + 1}: {arrangement.label}: {row[key]['samples_per_s']:.2f} samples/s "
                    f"(steps {row[key]['steps']})")
        row["ratio"] = row["candidate"]["samples_per_s"] / max(row["reference"]["samples_per_s"], 1e-12)
        row["load_after"] = load_average()
        rows.append(row)
    return {"opt": opt, "batch": batch, "size": list(size), "seconds": seconds,
            "reference": asdict(reference), "candidate": asdict(candidate), "rounds": rows,
            "median_ratio": statistics.median(r["ratio"] for r in rows)}


def format_report(result: dict, machine: str) -> str:
    """Markdown table of the rounds (samples/s, CPU seconds and page faults per step) and the median ratio."""
    ref, cand = result["reference"]["label"], result["candidate"]["label"]
    lines = [f"{result['opt']}, batch {result['batch']} of {result['size'][0]}x{result['size'][1]}, "
             f"{result['seconds']:g} s windows; {machine}", "",
             f"| round | {ref}: samples/s | {cand}: samples/s | ratio | CPU user + sys s per step | "
             f"minor faults per step | peak RSS GiB | load before / after |",
             "|---:|---:|---:|---:|---|---|---|---|"]
    for r in result["rounds"]:
        a, b = r["reference"], r["candidate"]
        lines.append(f"| {r['round']} | {a['samples_per_s']:.2f} | {b['samples_per_s']:.2f} | {r['ratio']:.2f}x | "
                     f"{a['user_s_per_step']:.2f} + {a['sys_s_per_step']:.2f} / "
                     f"{b['user_s_per_step']:.2f} + {b['sys_s_per_step']:.2f} | "
                     f"{a['minor_faults_per_step']:,.0f} / {b['minor_faults_per_step']:,.0f} | "
                     f"{a['peak_rss_gib']:.2f} / {b['peak_rss_gib']:.2f} | {r['load_before']} / {r['load_after']} |")
    lines.append(f"\nmedian ratio ({cand} over {ref}): {result['median_ratio']:.2f}x")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Worker entry: ``python -m hidiff.profiling.side_by_side STEP_SPEC_JSON SECONDS``."""
    args = list(sys.argv[1:] if argv is None else argv)
    result = count_steps(StepSpec.from_json(args[0]), float(args[1]), sys.stdin.readline)
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
