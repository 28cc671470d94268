"""All-or-nothing preparation: build every output in a staging folder, then move it into place.

A preparation writes nothing under ``--dst`` directly.  Every output (a folder
of images, an ``.lmdb`` store, a note or report file) is built under
``<dst>/.hidiff-prepare-<pid>-<token>/`` (the same file system, so moving is a
rename), which the run holds an advisory lock (``flock``) on until it ends: a
later run removes a staging folder only when it can take that lock, so a live
run's folder is never removed, whatever host or PID namespace it runs in.  Only when the whole preparation succeeded is each output moved to
its final path; an existing one (``--overwrite``) is first renamed aside and
deleted after every new output is in place.  On any failure, Ctrl-C
included, the staging folder is removed and ``--dst`` is left as it was.
Output folders are checked against the real destination before any work
starts, so a refused run changes nothing either.  A set folder (``test/HIDE``)
holds one run's outputs only: ``--overwrite`` sets aside what an earlier run
left there beside the new outputs (an ``.lmdb`` store the new run does not
write), and without it such a leftover is refused.  A set that a preparation derives and this run does not
write (a validation split after ``--val-scenes 0``) is *retired*: an earlier run's copy would otherwise stay
and be read as this preparation's, so ``--overwrite`` removes it and without it the run is refused.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterable, Iterator, Optional

from hidiff.errors import DataError, HidiffError
from hidiff.utils.folder_lock import try_lock_folder


PREFIX = ".hidiff-prepare-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale(dst: Path) -> list[Path]:
    """Delete staging folders under ``dst`` left by killed runs (no process holds their lock); return them."""
    removed = []
    if not dst.is_dir():
        return removed
    for entry in sorted(dst.iterdir()):
        if not entry.name.startswith(PREFIX) or entry.is_symlink() or not entry.is_dir():
            continue
        tail = entry.name[len(PREFIX):]
        if tail.isdigit() and int(tail) != os.getpid() and _pid_alive(int(tail)):
            continue  # an older hidiff's folder (named by PID alone, never locked) whose process may be running
        fd = try_lock_folder(entry)
        if fd is None:
            continue  # a live run's
        try:
            old = entry / "old"
            if old.is_dir() and any(old.iterdir()):
                raise DataError(f"'{entry}' holds outputs that a preparation killed while moving its own into "
                                f"place had set aside ('{old}'): '{dst}' may now mix old and new outputs. Move "
                                f"them back (or delete them), remove '{entry}', and run again")
            shutil.rmtree(entry)
        finally:
            os.close(fd)
        removed.append(entry)
    return removed


def _device(path: Path) -> int:
    """The file system (``st_dev``) that ``path`` is or would be created on: its nearest existing ancestor's."""
    for p in [path, *path.parents]:
        if p.exists():
            return p.stat().st_dev
    return Path.cwd().stat().st_dev


def check_same_file_system(dst: Path, folders: Iterable[Path]) -> None:
    """Refuse (DataError) an output folder on another file system than ``dst`` (a subfolder that is a symbolic
    link to another disk): outputs are moved into place by renaming, which cannot cross file systems."""
    home = _device(dst)
    for folder in map(Path, folders):
        if _device(folder) != home:
            raise DataError(f"output folder '{folder}' is on another file system than --dst '{dst}' (a symbolic "
                            f"link to another disk?); a preparation moves its outputs into place by renaming, "
                            f"which cannot cross file systems: use a --dst on that file system")


def set_folders(folders: Iterable[Path]) -> set:
    """The folders that hold a preparation's output folders (``test/HIDE`` for ``test/HIDE/input``): each holds
    one prepared set, all of it written by one run."""
    return {Path(f).parent for f in folders}


def leftovers(folders: Iterable[Path], outputs: Iterable[Path]) -> list:
    """Entries of the set folders that are not among ``outputs``: what an earlier preparation left there."""
    outputs = {Path(o) for o in outputs}
    return sorted(entry for parent in set_folders(folders) if parent.is_dir() for entry in parent.iterdir()
                  if entry not in outputs and not entry.name.startswith(PREFIX))


def check_destination(folders: Iterable[Path], overwrite: bool, files: Optional[Iterable[Path]] = None,
                      retired: Iterable[Path] = ()) -> None:
    """Refuse (DataError) if an output folder exists non-empty without ``overwrite``, or is not a folder, or (without
    ``overwrite``) a set folder holds other outputs of an earlier preparation, which would mix with this one's
    (before the work, when the files it writes are not known yet, ``files`` is None: folders only), or a
    ``retired`` set folder (one this run does not write) is there from an earlier preparation."""
    folders = [Path(f) for f in folders]
    for old in map(Path, retired):
        if old.is_symlink() or (old.exists() and not old.is_dir()):
            raise DataError(f"'{old}' exists and is not a folder; move it away")
        if old.is_dir() and any(old.iterdir()) and not overwrite:
            raise DataError(f"'{old}' holds a set from an earlier preparation that this run does not write "
                            f"(it would still be read, as if this run had made it); pass --overwrite to "
                            f"remove it, or choose another --dst")
    for folder in folders:
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise DataError(f"output folder '{folder}' exists and is not a folder; move it away")
        if folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise DataError(f"output folder '{folder}' already exists and is not empty; pass --overwrite "
                            f"to replace it")
    if not overwrite:
        old = [e for e in leftovers(folders, [*folders, *(files or ())]) if files is not None or e.is_dir()]
        if old:
            names = [e.name for e in old if e.parent == old[0].parent]
            raise DataError(f"'{old[0].parent}' already holds {', '.join(names)} from an earlier preparation, "
                            f"which would mix with this one; pass --overwrite to replace the whole set, or "
                            f"choose another --dst")


class Staging:
    """The staging folder of one preparation and the outputs built in it (final path -> staged path)."""

    def __init__(self, dst: Path, overwrite: bool, retired: Iterable[Path] = ()) -> None:
        self.dst = Path(dst)
        self.overwrite = overwrite
        self.retired = [Path(r) for r in retired]
        self.root = self.dst / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.folders: dict[Path, Path] = {}
        self.files: dict[Path, Path] = {}
        self.lock_fd: Optional[int] = None

    def create(self) -> None:
        """Make the staging folder and hold its lock until :meth:`remove`."""
        self.root.mkdir(parents=True)
        self.lock_fd = try_lock_folder(self.root)

    def check_intact(self) -> None:
        """DataError if the staging folder is no longer the one this run made (another process removed it):
        what it holds then is not this run's whole output."""
        if self.lock_fd is None:
            return
        mine = os.fstat(self.lock_fd)
        try:
            there = os.stat(self.root)
        except FileNotFoundError:
            there = None
        if there is None or (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
            raise DataError(f"the staging folder '{self.root}' was removed while this run wrote into it (by "
                            f"another process or by hand); nothing was moved into place, run again")

    def _staged(self, final: Path) -> Path:
        self.check_intact()
        try:
            rel = Path(final).relative_to(self.dst)
        except ValueError:
            raise DataError(f"output '{final}' is not under --dst '{self.dst}'") from None
        return self.root / "new" / rel

    def folder(self, final: Path) -> Path:
        """Create and return the staged folder for the output folder ``final``."""
        staged = self.folders.setdefault(Path(final), self._staged(final))
        staged.mkdir(parents=True, exist_ok=True)
        return staged

    def store(self, final: Path) -> Path:
        """The staged path of an output folder that its writer creates itself (an ``.lmdb`` store)."""
        staged = self.folders.setdefault(Path(final), self._staged(final))
        staged.parent.mkdir(parents=True, exist_ok=True)
        return staged

    def file(self, final: Path) -> Path:
        """The staged path of the output file ``final`` (notes, reports, label files; replaced silently)."""
        staged = self.files.setdefault(Path(final), self._staged(final))
        staged.parent.mkdir(parents=True, exist_ok=True)
        return staged

    def commit(self) -> None:
        """Move every staged output to its final path; on failure put everything back as it was."""
        self.check_intact()
        check_destination(self.folders, self.overwrite, self.files, self.retired)
        outputs = [(final, staged) for final, staged in {**self.folders, **self.files}.items() if staged.exists()
                   or staged.is_symlink()]
        # --overwrite replaces a set whole: what an earlier run left beside the new outputs is set aside too
        outputs += [(old, None) for old in leftovers(self.folders, [*self.folders, *self.files])]
        outputs += [(old, None) for old in self.retired if old.exists()]
        created: list[Path] = []
        moved: list[tuple[Path, Optional[Path], Optional[Path]]] = []  # (final, staged or None, old one set aside)
        aside_root = self.root / "old"
        try:
            for final, staged in outputs:
                missing = [p for p in [final.parent, *final.parent.parents] if not p.exists()]
                for parent in reversed(missing):
                    parent.mkdir()
                    created.append(parent)
                aside = None
                if final.exists() or final.is_symlink():
                    aside = aside_root / final.relative_to(self.dst)
                    aside.parent.mkdir(parents=True, exist_ok=True)
                moved.append((final, staged, aside))
                if aside is not None:
                    os.rename(final, aside)
                if staged is not None:
                    os.rename(staged, final)
        except BaseException:
            for final, staged, aside in reversed(moved):
                with contextlib.suppress(OSError):
                    if staged is not None and not staged.exists() and (final.exists() or final.is_symlink()):
                        os.rename(final, staged)
                    if aside is not None and (aside.exists() or aside.is_symlink()):
                        os.rename(aside, final)
            for parent in reversed(created):
                with contextlib.suppress(OSError):
                    parent.rmdir()
            raise

    def remove(self) -> None:
        """Delete the staging folder: what a failed run built, or the old outputs a committed one set aside."""
        shutil.rmtree(self.root, ignore_errors=True)  # the random token makes the path this run's alone
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def _name_final_paths(exc: BaseException, staged_root: str, dst: str) -> None:
    """Rewrite the staged paths an error names into the final ones, so no message names the staging folder."""
    if isinstance(exc, OSError):
        for attr in ("filename", "filename2"):
            if isinstance(getattr(exc, attr), str):
                setattr(exc, attr, getattr(exc, attr).replace(staged_root, dst))
    else:
        exc.args = tuple(a.replace(staged_root, dst) if isinstance(a, str) else a for a in exc.args)


@contextlib.contextmanager
def staged(dst: Path, overwrite: bool, folders: Iterable[Path], retired: Iterable[Path] = ()) -> Iterator[Staging]:
    """Check ``folders`` (and the ``retired`` set folders) against ``dst``, then yield a fresh :class:`Staging`;
    commit it on success.

    On any exception (KeyboardInterrupt included) the staging folder is
    removed, and so are the folders this run created to hold it, before re-raising.
    """
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise DataError(f"--dst '{dst}' exists and is not a folder")
    retired = [Path(r) for r in retired]
    folders = [Path(f) for f in folders]
    check_destination(folders, overwrite, retired=retired)
    check_same_file_system(dst, [*folders, *retired])
    made = [p for p in [dst, *dst.parents] if not p.exists()]
    remove_stale(dst)
    stage = Staging(dst, overwrite, retired)
    try:
        stage.create()
        try:
            yield stage
        except (HidiffError, OSError) as exc:
            _name_final_paths(exc, str(stage.root / "new"), str(dst))
            raise
        stage.commit()
    except BaseException:
        stage.remove()
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    stage.remove()
