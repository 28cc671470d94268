"""BasicSR-compatible LMDB image stores: writing a folder into one, and reading it.

Layout of ``<name>.lmdb/``: ``data.mdb``, ``lock.mdb`` and ``meta_info.txt``
with one line per image, ``<stem>.png (h,w,c) <compress_level>``.  Keys are the
file stems (ASCII/UTF-8); values are PNG-encoded images, so decoding gives the
same pixels as the source file (lossless re-encoding, also for JPEG sources).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from hidiff.data.image_io import encode_png_raw, list_images, read_raw
from hidiff.errors import DataError
from hidiff.utils.atomic import atomic_write_text
from hidiff.utils.optional import require

PathLike = Union[str, "os.PathLike[str]"]

META_INFO = "meta_info.txt"
_META_LINE = re.compile(r"^(?P<name>.+) \((?P<h>\d+),(?P<w>\d+),(?P<c>\d+)\) (?P<level>\d+)$")


def read_meta_info(lmdb_root: PathLike) -> list[tuple[str, tuple[int, int, int]]]:
    """``[(name, (h, w, c)), ...]`` from ``<lmdb_root>/meta_info.txt``."""
    meta = Path(lmdb_root) / META_INFO
    if not meta.is_file():
        raise DataError(f"LMDB '{lmdb_root}' has no {META_INFO}; build it with "
                        f"scripts/prepare_data.py --lmdb or hidiff.data.lmdb_io.write_lmdb")
    entries = []
    for lineno, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = _META_LINE.match(line.strip())
        if m is None:
            raise DataError(f"{meta}:{lineno}: expected 'name.png (h,w,c) level', got {line!r}")
        entries.append((m["name"], (int(m["h"]), int(m["w"]), int(m["c"]))))
    return entries


def write_lmdb(folder: PathLike, lmdb_path: PathLike, *, compress_level: int = 1,
               files: Optional[Iterable[PathLike]] = None, batch: int = 64,
               progress: Optional[Callable[[int, int], None]] = None, map_size: Optional[int] = None) -> int:
    """Store every image of ``folder`` (or the given ``files``) in a new LMDB at ``lmdb_path``.

    The store is built in a temporary sibling folder and renamed into place, so
    an interrupted run never leaves a half-written LMDB behind.  The map size
    starts at ``map_size`` (default: 4x the source bytes, at least 16 MiB) and
    doubles whenever it is full.  Returns the number of images written.
    """
    lmdb = require("lmdb", "lmdb", "LMDB storage")

    paths = [Path(p) for p in files] if files is not None else list_images(folder)
    target = Path(lmdb_path)
    stems = [p.stem for p in paths]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise DataError(f"cannot build LMDB from '{folder}': duplicate file stems {dup[:5]}")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if map_size is None:
        map_size = max(1 << 24, 4 * sum(p.stat().st_size for p in paths))
    env = lmdb.open(str(tmp), map_size=map_size, subdir=True, lock=True)
    lines: list[str] = []
    pending: list[tuple[bytes, bytes]] = []

    def flush() -> None:
        nonlocal map_size
        while True:
            try:
                with env.begin(write=True) as txn:
                    for k, v in pending:
                        txn.put(k, v)
                break
            except lmdb.MapFullError:
                map_size *= 2
                env.set_mapsize(map_size)
        pending.clear()

    try:
        for i, path in enumerate(sorted(paths, key=lambda p: p.stem)):
            raw = read_raw(path)
            h, w = raw.shape[:2]
            c = 1 if raw.ndim == 2 else raw.shape[2]
            pending.append((path.stem.encode("utf-8"), encode_png_raw(raw, compress_level)))
            lines.append(f"{path.stem}.png ({h},{w},{c}) {compress_level}")
            if len(pending) >= batch:
                flush()
            if progress is not None:
                progress(i + 1, len(paths))
        if pending:
            flush()
        env.sync()
    finally:
        env.close()
    atomic_write_text(tmp / META_INFO, "".join(line + "\n" for line in lines))
    if target.exists():
        _forget_env(target)
        shutil.rmtree(target)
    os.replace(tmp, target)
    return len(lines)


# One read-only environment per store and process: LMDB forbids opening the same
# store twice in a process, and several datasets may read one store.
_ENVS: dict[str, tuple[int, object]] = {}


def _shared_env(root: str):
    lmdb = require("lmdb", "lmdb", "LMDB storage")

    key = os.path.realpath(root)
    entry = _ENVS.get(key)
    if entry is not None and entry[0] == os.getpid():
        return entry[1]
    if entry is not None:
        # Inherited through fork (a DataLoader worker): LMDB handles must not be used across
        # fork, and py-lmdb refuses a second open while this one is registered.  Closing the
        # child's copy only unmaps this process's memory (the store is opened with lock=False).
        entry[1].close()
    env = lmdb.open(root, readonly=True, lock=False, readahead=False, meminit=False, subdir=True)
    _ENVS[key] = (os.getpid(), env)
    return env


def _forget_env(root: PathLike) -> None:
    """Close this process's handle of a store that is about to be replaced."""
    entry = _ENVS.pop(os.path.realpath(root), None)
    if entry is not None and entry[0] == os.getpid():
        entry[1].close()


class LmdbReader:
    """Read-only access to one LMDB store, opened lazily (once per process and store)."""

    def __init__(self, root: PathLike) -> None:
        self.root = str(root)
        if not Path(self.root).is_dir():
            raise DataError(f"LMDB folder '{self.root}' does not exist")

    def get(self, key: str) -> bytes:
        """The stored bytes of ``key``; DataError if the key is missing."""
        with _shared_env(self.root).begin(write=False) as txn:
            value = txn.get(key.encode("utf-8"))
        if value is None:
            raise DataError(f"key '{key}' is listed in '{self.root}/{META_INFO}' but missing from the LMDB")
        return bytes(value)
