"""Children run side by side get a share of the threads, never every core each (hidiff/utils/threads.py)."""
from __future__ import annotations

import os

from hidiff.utils.threads import thread_total, threads_each


def test_the_share_divides_omp_num_threads_or_the_usable_cores():
    assert thread_total({"OMP_NUM_THREADS": "8"}) == 8
    assert threads_each(2, {"OMP_NUM_THREADS": "8"}) == 4
    assert threads_each(3, {"OMP_NUM_THREADS": "8"}) == 2
    assert threads_each(3, {"OMP_NUM_THREADS": "2"}) == 1          # never below one
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for unset in ({}, {"OMP_NUM_THREADS": ""}, {"OMP_NUM_THREADS": "0"}, {"OMP_NUM_THREADS": "four"}):
        assert thread_total(unset) == cores
    assert threads_each(1, {}) == cores


def test_a_sweep_shares_the_threads_among_its_jobs_and_their_ranks(tmp_path):
    from sweep_tiny import write_tiny_sweep

    from hidiff.sweep.runner import SweepRunner
    from hidiff.sweep.spec import load_sweep

    base, sweep_file = write_tiny_sweep(tmp_path, seeds=1)
    sweep = load_sweep(sweep_file, base)
    env = {"OMP_NUM_THREADS": "8", "PATH": os.environ.get("PATH", "")}
    assert SweepRunner(sweep, jobs=1, env=env).child_env()["OMP_NUM_THREADS"] == "8"    # one job: as given
    assert SweepRunner(sweep, jobs=2, env=env).child_env()["OMP_NUM_THREADS"] == "4"
    sweep.nproc = 2                                                                     # torchrun: per rank
    assert SweepRunner(sweep, jobs=2, env=env).child_env()["OMP_NUM_THREADS"] == "2"
