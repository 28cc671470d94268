"""Put prepared files in place: hard links by default, symlinks or copies on request.

A hard link costs no space, and the prepared set survives if the source is
later deleted; we never write through it.  Where hard links are impossible
(another file system) an absolute symlink is made instead.  ``--copy`` makes
real copies.  Every file appears atomically (temporary name + rename).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from hidiff.data.image_io import IMG_EXTENSIONS
from hidiff.data.lmdb_io import write_lmdb
from hidiff.data.prepare.checks import Pair, PrepareReport
from hidiff.errors import DataError
from hidiff.utils.atomic import atomic_open

MODES = ("link", "symlink", "copy")


@dataclass
class PrepareOptions:
    """Options shared by every benchmark (the command-line flags of ``prepare_data.py``)."""

    dst: Path
    mode: str = "link"
    lmdb: bool = False
    strict: bool = False
    verify: bool = True
    val_scenes: int = 2
    official_test_val: bool = False
    overwrite: bool = False
    workers: int = max(1, os.cpu_count() or 1)
    crop_size: int = 512
    crop_stride: int = 256
    val_crop: int = 256
    gopro_blur: str = "blur"
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.dst = Path(self.dst)
        if self.mode not in MODES:
            raise DataError(f"placing mode must be one of {MODES}, got {self.mode!r}")
        if self.val_scenes < 0:
            raise DataError(f"--val-scenes must be >= 0, got {self.val_scenes}")


def prepare_output_dir(folder: Path, overwrite: bool) -> Path:
    """Create ``folder``; an existing non-empty one needs ``overwrite`` (its images are then removed)."""
    if folder.exists():
        entries = list(folder.iterdir())
        if entries and not overwrite:
            raise DataError(f"output folder '{folder}' already exists and is not empty; pass --overwrite "
                            f"to replace its contents")
        for e in entries:
            if e.is_file() or e.is_symlink():
                if e.name.lower().endswith(IMG_EXTENSIONS) or e.name == "meta_info.txt":
                    e.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def place_file(src: Path, dst: Path, mode: str) -> str:
    """Make ``dst`` a hard link, symlink or copy of ``src``; return the method used."""
    src = Path(src)
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        return "same"
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    used = mode
    if mode == "link":
        try:
            os.link(src, tmp)
        except OSError:
            used = "symlink"
    if used == "symlink":
        os.symlink(src.resolve(), tmp)
    if used == "copy":
        with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        return used
    os.replace(tmp, dst)
    return used


def write_pair_folders(pairs: Sequence[Pair], out_root: Path, opts: PrepareOptions, report: PrepareReport,
                       roles: Optional[Sequence[str]] = None) -> list[Path]:
    """Place every pair's files as ``out_root/<role>/<key><ext>``; return the role folders."""
    roles = list(roles or (pairs[0].files if pairs else []))
    for role in roles:
        sources = {pair.files[role].parent.resolve() for pair in pairs}
        if (out_root / role).resolve() in sources:
            raise DataError(f"output folder '{out_root / role}' is also a source folder; choose another --dst")
    folders = [prepare_output_dir(out_root / role, opts.overwrite) for role in roles]
    methods: dict[str, int] = {}
    for pair in pairs:
        for role, folder in zip(roles, folders):
            src = pair.files[role]
            used = place_file(src, folder / f"{pair.key}{src.suffix.lower()}", opts.mode)
            methods[used] = methods.get(used, 0) + 1
    for folder in folders:
        report.output(folder, len(pairs))
    if methods.get("symlink") and opts.mode == "link":
        report.note(f"  note: hard links were impossible for {methods['symlink']} file(s) (another file "
                    f"system?); made symlinks instead: keep the source folder")
    return folders


def build_lmdbs(folders: Sequence[Path], report: PrepareReport) -> None:
    """Write ``<folder>.lmdb`` next to each folder (BasicSR layout with meta_info.txt)."""
    for folder in folders:
        target = folder.with_name(folder.name + ".lmdb")
        n = write_lmdb(folder, target)
        report.output(target, n)
