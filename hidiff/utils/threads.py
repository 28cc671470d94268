"""Share a machine's CPU threads among child processes that run at the same time.

Several trainings on one CPU, each with a thread per core, oversubscribe it: their threads mostly wait for
one another.  Each on its share of the threads, they get more done than one training on all of them
(docs/speed.md, "Independent trainings side by side").
"""
from __future__ import annotations

import os
from typing import Mapping, Optional


def thread_total(env: Optional[Mapping[str, str]] = None) -> int:
    """The threads there are to share: ``OMP_NUM_THREADS`` where set to a positive integer, else the usable
    cores."""
    env = os.environ if env is None else env
    value = env.get("OMP_NUM_THREADS", "")
    if value.strip().isdigit() and int(value) > 0:
        return int(value)
    return usable_cores()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_each(processes: int, env: Optional[Mapping[str, str]] = None) -> int:
    """Threads for each of ``processes`` processes running at once (at least 1)."""
    return max(1, thread_total(env) // max(1, processes))
