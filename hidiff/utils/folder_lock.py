"""An advisory lock (``flock``) on a folder, held through an open descriptor until it is closed or the process
ends: the system drops it when the holder dies, so a lock that can be taken means nobody is working there."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: folders are not locked
    fcntl = None  # type: ignore[assignment]

LOCKING = fcntl is not None


def try_lock_folder(folder: Path) -> Optional[int]:
    """A descriptor holding an exclusive lock on ``folder``, or None if another process holds one (or the
    platform has no ``flock``)."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
