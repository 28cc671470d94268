"""Keep freed memory in the process for reuse (glibc's malloc), so a CPU training step does not page-fault.

glibc hands every block above its mmap threshold (at most 32 MiB) to its own ``mmap`` and gives it back to the
OS when freed, and trims the heap's free top.  A training step allocates and frees the same large activations
every time, so every step faulted them in again, page by page, zeroed by the kernel: about a fifth of a small
CPU training's time (docs/speed.md, "Freed memory kept on a CPU").  With ``mmap`` for blocks off and the trim
threshold at its largest, freed blocks stay in the heap and the next step reuses them; the process's memory
then stays near its peak instead of going down between steps.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1   # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
TRIM_NEVER = 2**31 - 1  # the largest int mallopt takes: the heap's free top is never given back


def _glibc(name: str, argtypes: list):
    """glibc's function ``name`` (int result), or None where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return fn


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; False (nothing changed) where the C library is not
    glibc or refuses."""
    mallopt = _glibc("mallopt", [ctypes.c_int, ctypes.c_int])
    return mallopt is not None and mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_NEVER) == 1


def trim_freed_memory() -> bool:
    """Give the memory malloc holds free back to the OS (``malloc_trim(0)``, every arena), whatever
    :func:`keep_freed_memory` set; False where the C library is not glibc (nothing released)."""
    trim = _glibc("malloc_trim", [ctypes.c_size_t])
    if trim is None:
        return False
    trim(0)
    return True
