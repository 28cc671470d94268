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
