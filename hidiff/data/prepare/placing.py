"""Put prepared files in place: hard links by default, symlinks or copies on request.

A hard link costs no space, and the prepared set survives if the source is
later deleted; we never write through it.  Where hard links are impossible
(another file system) an absolute symlink is made instead.  ``--copy`` makes
real copies.  Every file appears atomically (temporary name + rename), and
whole outputs are built in a staging folder and moved into place only when
the preparation succeeded (:mod:`hidiff.data.prepare.staging`).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from hidiff.data.lmdb_io import write_lmdb
from hidiff.data.prepare.checks import Pair, PrepareReport
from hidiff.data.prepare.staging import Staging
from hidiff.errors import DataError
from hidiff.utils.atomic import atomic_open
from hidiff.utils.progress import Progress

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
                       stage: Staging, roles: Optional[Sequence[str]] = None) -> list[Path]:
    """Stage every pair's files as ``out_root/<role>/<key><ext>``; return the (final) role folders."""
    roles = list(roles or (pairs[0].files if pairs else []))
    for role in roles:
        sources = {pair.files[role].parent.resolve() for pair in pairs}
        if (out_root / role).resolve() in sources:
            raise DataError(f"output folder '{out_root / role}' is also a source folder; choose another --dst")
    folders = [out_root / role for role in roles]
    staged = [stage.folder(folder) for folder in folders]
    methods: dict[str, int] = {}
    with Progress(len(pairs), desc=f"placing {out_root}", unit="pair") as bar:
        for pair in pairs:
            for role, folder in zip(roles, staged):
                src = pair.files[role]
                used = place_file(src, folder / f"{pair.key}{src.suffix.lower()}", opts.mode)
                methods[used] = methods.get(used, 0) + 1
            bar.update(1)
    for folder in folders:
        report.output(folder, len(pairs))
    if methods.get("symlink") and opts.mode == "link":
        report.note(f"  note: hard links were impossible for {methods['symlink']} file(s) (another file "
                    f"system?); made symlinks instead: keep the source folder")
    return folders


def build_lmdbs(folders: Sequence[Path], report: PrepareReport, stage: Staging) -> None:
    """Stage ``<folder>.lmdb`` next to each (final) folder (BasicSR layout with meta_info.txt)."""
    for folder in folders:
        target = folder.with_name(folder.name + ".lmdb")
        n = write_lmdb(stage.folders[folder], stage.store(target))
        report.output(target, n)
