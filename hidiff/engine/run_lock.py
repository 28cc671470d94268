"""One training at a time per run folder: an advisory lock (``flock``) on ``experiments/<name>``.

A second start of the same name (fresh or resumed) while a run trains would archive or share its folder, and
the running trainer, which writes by path, would then put its checkpoints into the newcomer's folder.  The
lock is held by rank 0 from the checks until the run ends; the system drops it when the process dies.

A run folder that does not exist yet has nothing to lock, so taking a folder's lock and archiving or creating
the folder happen while the experiments folder itself is locked (briefly, a blocking ``flock``): of two fresh
starts of one new name, the second to get there finds the first's folder locked and is refused, moving nothing.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

from hidiff.errors import ConfigError
from hidiff.utils.folder_lock import LOCKING, fcntl, try_lock_folder

#: test hook: :meth:`RunLock.claim` first waits until this file exists (a second start that passed its
#: checks before the first start created the run folder, made deterministic)
WAIT_ENV = "HIDIFF_TEST_CLAIM_AFTER_FILE"


class RunLock:
    """The lock this process holds on a run folder (none until :meth:`hold` or :meth:`claim`)."""

    def __init__(self) -> None:
        self.fd: Optional[int] = None      # the run folder's lock
        self.guard: Optional[int] = None   # the experiments folder's, from claim() to claimed()

    def hold(self, folder: Path) -> None:
        """Lock ``folder`` if it exists and is not locked by this object yet; ConfigError if another run holds it."""
        if not LOCKING or not folder.parent.is_dir():
            return
        self._lock_parent(folder.parent)
        try:
            self._hold(folder)
        finally:
            self._drop_guard()

    def claim(self, folder: Path) -> None:
        """Before ``folder`` is archived or created: lock the experiments folder until :meth:`claimed`, and
        ``folder`` if it exists; ConfigError (nothing moved or written) if another run holds it."""
        if not LOCKING:
            return
        _test_wait()
        folder.parent.mkdir(parents=True, exist_ok=True)
        self._lock_parent(folder.parent)
        try:
            self._hold(folder)
        except BaseException:
            self._drop_guard()
            raise

    def claimed(self, folder: Path) -> None:
        """``folder`` is archived and/or created: lock the one there now and let other starts go on."""
        try:
            if LOCKING:
                self._hold(folder)
        finally:
            self._drop_guard()

    def _hold(self, folder: Path) -> None:
        if not folder.is_dir() or self._holds(folder):
            return
        self._drop_run_lock()
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

    def _lock_parent(self, parent: Path) -> None:
        fd = os.open(parent, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held by another start only while it archives or creates a folder
        self.guard = fd

    def _drop_guard(self) -> None:
        if self.guard is not None:
            os.close(self.guard)
        self.guard = None

    def _drop_run_lock(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
        self.fd = None

    def release(self) -> None:
        self._drop_guard()
        self._drop_run_lock()


def _test_wait() -> None:
    path = os.environ.get(WAIT_ENV)
    if path:
        print(f"{WAIT_ENV}: waiting for {path}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 600
    while path and not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
