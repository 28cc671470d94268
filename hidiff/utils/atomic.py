"""Crash-safe file writes: write to a temporary sibling, fsync, then rename.

A reader (or a resumed run) therefore sees either the old file or the complete
new one, never a truncated file, even if the process is killed mid-write.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


_UMASK_LOCK = threading.Lock()
TEMP_NAME_BYTES = 200   # of the target's name kept in its temporary file's: ``.<name>.XXXXXXXX.tmp`` adds 14


def _umask() -> int:
    """The process umask.  Reading it means setting it: the lock keeps two threads (parallel writes) from
    leaving it at 0 for good; read on every write, so a later change by the user is honoured."""
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def _temp_prefix(name: str) -> str:
    """The temporary file's prefix ``.<name>.``, ``name`` cut to :data:`TEMP_NAME_BYTES` bytes so that a legal
    name up to 255 bytes gives a legal temporary one; it still matches ``.*.tmp`` (remove_stale_temp_files)."""
    cut = name[:TEMP_NAME_BYTES]
    while len(os.fsencode(cut)) > TEMP_NAME_BYTES:
        cut = cut[:-1]
    return f".{cut}."


def fsync_dir(folder: Path) -> None:
    """fsync a folder, so renames and new names in it survive a crash (best effort: not every system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on clean exit it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target.name), suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            # mkstemp creates 0600 files; give the result the permissions a plain open() would
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
