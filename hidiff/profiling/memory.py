"""Peak memory of a stretch of work: resident set size on CPU, allocator statistics on CUDA.

CPU: Linux resets the process's RSS high-water mark (VmHWM) when ``5`` is written
to ``/proc/self/clear_refs``; the peak of the measured work is then VmHWM read
afterwards, and ``delta`` subtracts the RSS just before (model weights, torch
runtime, inputs).  The reset is checked (VmHWM must fall to VmRSS): where the
kernel refuses or ignores it, the lifetime high-water mark is reported and
``method`` says so.  The profiler runs every case in a fresh process, so earlier
cases never count either way.

RSS only grows when the work touches pages the process does not already hold:
in a long-lived process an allocation may be served from memory that an
earlier, freed allocation left resident, and then it costs (and shows) nothing.
A warm-up call leaves such memory behind, all of it where malloc keeps freed
memory (:mod:`hidiff.utils.malloc`, the trainer's default on a CPU), so the
measurers call :func:`release_freed_memory` after the warm-up and before
``reset()``: the delta is then the measured work's own memory, whichever malloc
settings the process has.
"""
from __future__ import annotations

import gc
import resource
import sys
from pathlib import Path
from typing import Dict, Optional

import torch

from hidiff.utils.malloc import trim_freed_memory

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_SLACK_KIB = 4096  # VmHWM may run a few pages ahead of VmRSS right after a reset


def _status_kib(field: str) -> Optional[int]:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def current_rss() -> Optional[int]:
    """Resident set size now, in bytes (None where /proc is unavailable)."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def lifetime_peak_rss() -> int:
    """The process's peak RSS since it started (``ru_maxrss``), in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def release_freed_memory() -> bool:
    """Give the memory malloc holds free back to the OS (glibc's ``malloc_trim(0)``, every arena), after a
    garbage collection; False where the C library is not glibc (nothing released)."""
    gc.collect()
    return trim_freed_memory()


class PeakMemory:
    """``reset()`` before the work, ``read()`` after it."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.method = ""
        self.before: Optional[int] = None

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated / max_memory_reserved"
            return
        self.before = current_rss()
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            self.method = "ru_maxrss (process lifetime, includes model construction)"
            return
        hwm, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
        if hwm is not None and rss is not None and hwm <= rss + _RESET_SLACK_KIB:
            self.method = "VmHWM after resetting it (/proc/self/clear_refs)"
        else:
            self.method = "VmHWM (process lifetime: this kernel ignored the reset)"

    def read(self) -> Dict[str, Optional[int] | str]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            alloc = torch.cuda.max_memory_allocated(self.device)
            return {"method": self.method, "cuda_peak_allocated_bytes": int(alloc),
                    "cuda_peak_reserved_bytes": int(torch.cuda.max_memory_reserved(self.device)),
                    "cuda_allocated_before_bytes": self.before,
                    "delta_bytes": None if self.before is None else int(alloc - self.before)}
        if self.method.startswith("VmHWM"):
            kib = _status_kib("VmHWM")
            peak = kib * 1024 if kib is not None else lifetime_peak_rss()
        else:
            peak = lifetime_peak_rss()
        now = current_rss()
        peak = max(peak, now or 0)
        return {"method": self.method, "peak_rss_bytes": int(peak), "rss_before_bytes": self.before,
                "delta_bytes": None if self.before is None else int(peak - self.before)}
