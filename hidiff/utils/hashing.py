"""File digests recorded in reports and checked when installing weights."""
from __future__ import annotations

import hashlib
import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (weights files can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(path: PathLike) -> str:
    """Hex sha256 of a file, or of a folder's files (their relative paths and contents, in sorted order):
    changes when a file is added, removed, renamed or rewritten with other bytes, not when it is only
    touched."""
    root = os.fspath(path)
    if os.path.isfile(root):
        return sha256_file(root)
    h = hashlib.sha256()
    seen = set()
    for folder, dirs, files in os.walk(root, followlinks=True):   # a set of symlinked scene folders too
        real = os.path.realpath(folder)
        if real in seen:        # a link back up the tree: walked once
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            h.update(os.path.relpath(full, root).replace(os.sep, "/").encode("utf-8") + b"\0")
            h.update(sha256_file(full).encode("ascii") + b"\n")
    return h.hexdigest()
