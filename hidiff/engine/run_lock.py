"""One training at a time per run folder: an advisory lock (``flock``) on ``experiments/<name>``.

A second start of the same name (fresh or resumed) while a run trains would archive or share its folder, and
the running trainer, which writes by path, would then put its checkpoints into the newcomer's folder.  The
lock is held by rank 0 from the checks until the run ends; the system drops it when the process dies.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from hidiff.errors import ConfigError
from hidiff.utils.folder_lock import LOCKING, try_lock_folder



class RunLock:
    """The lock this process holds on a run folder (none until :meth:`hold`)."""

    def __init__(self) -> None:
        self.fd: Optional[int] = None

    def hold(self, folder: Path) -> None:
        """Lock ``folder`` if it exists and is not locked by this object yet; ConfigError if another run holds it."""
        if not LOCKING or not folder.is_dir() or self._holds(folder):
            return
        self.release()
        fd = try_lock_folder(folder)
        if fd is None:
            raise ConfigError(f"{folder}: another training is using this run folder now; wait for it to end "
                              f"or give this run another name (option 'name' or -o name=...)") from None
        self.fd = fd

    def _holds(self, folder: Path) -> bool:
        """Whether the locked folder is ``folder`` still (an archived one was moved away: another inode)."""
        if self.fd is None:
            return False
        mine, there = os.fstat(self.fd), os.stat(folder)
        return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
        self.fd = None
