"""Where a dataset's images come from: a folder of files or a BasicSR-style LMDB.

Both give the same interface (``keys``, ``path_of``, ``size``, ``read``), so a dataset
option block reads folders or LMDBs by changing only ``io_backend``.  Keys are
file stems; nothing is decoded until ``read`` is called for one item (``size``
reads a file's header, or the LMDB's meta_info.txt).
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np

from hidiff.data.image_io import decode_image, list_images, read_image, stored_size
from hidiff.data.lmdb_io import LmdbReader, read_meta_info
from hidiff.errors import ConfigError, DataError

PathLike = Union[str, "os.PathLike[str]"]

BACKENDS = ("disk", "lmdb")


def backend_name(io_backend: Union[str, Mapping[str, Any], None]) -> str:
    """Normalise ``io_backend`` (``'disk'``, ``'lmdb'`` or BasicSR's ``{type: disk}``)."""
    if io_backend is None:
        return "disk"
    name = io_backend.get("type") if isinstance(io_backend, Mapping) else io_backend
    if name not in BACKENDS:
        raise ConfigError(f"io_backend: expected one of {', '.join(BACKENDS)}, got {io_backend!r}")
    return str(name)


class FolderSource:
    """Images stored as files directly inside one folder."""

    def __init__(self, root: PathLike) -> None:
        self.root = str(root)
        self._paths: dict[str, str] = {}
        for p in list_images(root):
            if p.stem in self._paths:
                raise DataError(f"folder '{root}' holds two images with the stem '{p.stem}': "
                                f"'{Path(self._paths[p.stem]).name}' and '{p.name}'")
            self._paths[p.stem] = str(p)

    def keys(self) -> list[str]:
        return sorted(self._paths)

    def path_of(self, key: str) -> str:
        return self._paths[key]

    def size(self, key: str) -> Optional[Tuple[int, int]]:
        """(height, width) from the file's header (None if unreadable)."""
        return stored_size(self._paths[key])

    def read(self, key: str) -> np.ndarray:
        return read_image(self._paths[key])


class LmdbSource:
    """Images stored in an LMDB with ``meta_info.txt`` (see :mod:`hidiff.data.lmdb_io`)."""

    def __init__(self, root: PathLike) -> None:
        self.root = str(root)
        self._names: dict[str, str] = {}
        self._sizes: dict[str, Tuple[int, int]] = {}
        for name, shape in read_meta_info(root):
            key = str(PurePosixPath(name).with_suffix(""))   # BasicSR's key: folder part kept ('000/00000000')
            if key in self._names:
                raise DataError(f"LMDB '{root}': the key '{key}' is listed twice in meta_info.txt")
            self._names[key] = name
            self._sizes[key] = (shape[0], shape[1])
        self._reader = LmdbReader(root)

    def keys(self) -> list[str]:
        return sorted(self._names)

    def path_of(self, key: str) -> str:
        return f"{self.root}/{self._names[key]}"

    def size(self, key: str) -> Optional[Tuple[int, int]]:
        """(height, width) as meta_info.txt lists it."""
        return self._sizes[key]

    def read(self, key: str) -> np.ndarray:
        return decode_image(self._reader.get(key), self.path_of(key))


def open_source(root: PathLike, backend: str, what: str) -> Union[FolderSource, LmdbSource]:
    """Open ``root`` with ``backend``; ``what`` (e.g. "dataroot_gt") names it in errors."""
    if root is None or str(root) == "":
        raise ConfigError(f"{what}: a folder path is required")
    if not Path(root).is_dir():
        raise DataError(f"{what}: '{root}' does not exist or is not a folder")
    if backend == "lmdb":
        return LmdbSource(root)
    if (Path(root) / "data.mdb").is_file():
        raise ConfigError(f"{what}: '{root}' is an LMDB store; set io_backend: lmdb to read it")
    return FolderSource(root)
