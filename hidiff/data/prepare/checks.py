"""Shared checks of benchmark preparation: pairing, official counts, decodability.

Every benchmark module scans its source layout into :class:`SplitScan` objects
(matched pairs plus the unmatched files on each side); :func:`check_split`
then verifies counts and decodes every image.  Problems are collected in the
:class:`PrepareReport`: by default they are loud warnings and the offending
pairs are left out; with ``strict`` the first split with problems stops the
preparation with a DataError that lists them all.
"""
from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from hidiff.data.image_io import list_images, read_raw
from hidiff.errors import DataError
from hidiff.utils.atomic import atomic_write_text
from hidiff.utils.progress import Progress

# Official numbers of pairs (docs/protocols.md).
OFFICIAL_COUNTS: dict[tuple[str, str], int] = {
    ("GoPro", "train"): 2103,
    ("GoPro", "test"): 1111,
    ("HIDE", "test"): 2025,
    ("RealBlur_J", "train"): 3758,
    ("RealBlur_J", "test"): 980,
    ("RealBlur_R", "train"): 3758,
    ("RealBlur_R", "test"): 980,
    ("DPDD", "train"): 350,
    ("DPDD", "val"): 74,
    ("DPDD", "test"): 76,
}

SHOWN = 5


def show(items: Sequence[str], n: int = SHOWN) -> str:
    """The first ``n`` items, comma separated, with a count of the rest."""
    items = list(items)
    head = ", ".join(str(i) for i in items[:n])
    return head + (f", ... ({len(items) - n} more)" if len(items) > n else "")


@dataclass
class Pair:
    """One sample of a benchmark: its key and a source file per role.

    Roles are the output sub-folder names: ``input``/``target``, or for DPDD
    ``inputC``/``inputL``/``inputR``/``target``.  ``scene`` groups frames for
    scene-level validation splits.
    """

    key: str
    files: dict[str, Path]
    scene: str = ""


#: the ``unmatched`` entry of a split the source has no folder for at all (a test-only download)
ABSENT_SPLIT = "missing split folder(s)"


@dataclass
class SplitScan:
    """What a layout scan found for one split of one benchmark."""

    benchmark: str
    split: str
    pairs: list[Pair]
    unmatched: dict[str, list[str]] = field(default_factory=dict)  # description -> files

    @property
    def title(self) -> str:
        return f"{self.benchmark} {self.split}"

    @property
    def absent(self) -> bool:
        """The source has no folder for this split (not one without usable pairs)."""
        return not self.pairs and list(self.unmatched) == [ABSENT_SPLIT]


def match_roles(files: dict[str, dict[str, Path]], *, anchor: str = "target",
                scene_of: Optional[Callable[[str], str]] = None) -> tuple[list[Pair], dict[str, list[str]]]:
    """Pair ``{role: {key: path}}`` by key; return pairs and the unmatched files per side."""
    keys = set(files[anchor])
    unmatched: dict[str, list[str]] = {}
    for role, index in files.items():
        if role == anchor:
            continue
        missing = sorted(str(files[anchor][k]) for k in keys - set(index))
        extra = sorted(str(index[k]) for k in set(index) - keys)
        if missing:
            unmatched[f"{anchor} file(s) without {role}"] = missing
        if extra:
            unmatched[f"{role} file(s) without {anchor}"] = extra
    complete = sorted(k for k in keys if all(k in index for index in files.values()))
    pairs = [Pair(k, {role: files[role][k] for role in files}, scene_of(k) if scene_of else "") for k in complete]
    return pairs, unmatched


def index_folder(folder: Path, *, key: Callable[[Path], str] = lambda p: p.stem,
                 duplicates: Optional[list[str]] = None) -> dict[str, Path]:
    """``{key: path}`` of the images in ``folder``.  With ``duplicates``, a key that two files share is
    appended to it and left out (which of ``a.png`` and ``a.jpg`` is the pair's is not for us to guess);
    without, the last file of a key is kept."""
    out: dict[str, Path] = {}
    clashing: set[str] = set()
    for p in list_images(folder):
        k = key(p)
        if k in out and duplicates is not None:
            duplicates.append(f"{out[k]} and {p} (key '{k}')")
            clashing.add(k)
        out[k] = p
    for k in clashing:
        del out[k]
    return out


def require_some(scans: Sequence[SplitScan], checked: Sequence[list]) -> None:
    """Refuse a source in which no split has a folder (``checked``: the pairs that passed, per scan)."""
    if not any(checked):
        looked = [path for scan in scans for path in scan.unmatched.get(ABSENT_SPLIT, [])]
        raise DataError(f"{scans[0].benchmark}: no split found (looked for {', '.join(looked)}); "
                        f"nothing was written")


class PrepareReport:
    """Counts, warnings and outputs of one preparation run; printed and saved as JSON."""

    def __init__(self, benchmark: str, log: Callable[[str], None] = print) -> None:
        self.benchmark = benchmark
        self.log = log
        self.counts: dict[str, dict[str, int]] = {}
        self.warnings: list[str] = []
        self.outputs: dict[str, int] = {}
        self.notes: list[str] = []

    def warn(self, message: str) -> None:
        """Record and print a loud warning (stderr)."""
        self.warnings.append(message)
        print(f"WARNING [{self.benchmark}]: {message}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.log(message)

    def output(self, folder: Path, n: int) -> None:
        self.outputs[str(folder)] = n
        self.log(f"  wrote {n:6d} files -> {folder}")

    def as_dict(self) -> dict:
        return {"benchmark": self.benchmark, "counts": self.counts, "warnings": self.warnings,
                "outputs": self.outputs, "notes": self.notes}

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n")


def size_mismatch(pair: Pair, shapes: dict) -> Optional[str]:
    """What is wrong with a pair whose roles' images (``role -> (h, w)``) differ in size; None if they agree."""
    if len(set(shapes.values())) <= 1:
        return None
    sizes = ", ".join(f"{role} {h}x{w} ({pair.files[role]})" for role, (h, w) in shapes.items())
    return f"pair '{pair.key}' has images of different sizes: {sizes}"


def _verify_pair(pair: Pair) -> list[str]:
    problems, shapes = [], {}
    for role, path in pair.files.items():
        try:
            shapes[role] = read_raw(path).shape[:2]
        except DataError as exc:
            problems.append(str(exc))
    mismatch = None if problems else size_mismatch(pair, shapes)
    return problems + ([mismatch] if mismatch else [])


def check_split(scan: SplitScan, report: PrepareReport, *, strict: bool, verify: bool,
                workers: int = 1, expected: Optional[int] = None) -> list[Pair]:
    """Check one split; return the pairs that passed.  See the module doc for strictness.  A split the source
    has no folder for (a download of the test set alone) is skipped with a warning and gives no pair."""
    title = scan.title
    if scan.absent:
        report.warn(f"{title}: not in the source ({', '.join(scan.unmatched[ABSENT_SPLIT])}); skipped")
        return []
    if expected is None:
        expected = OFFICIAL_COUNTS.get((scan.benchmark, scan.split))
    problems: list[str] = []
    for desc, files in scan.unmatched.items():
        problems.append(f"{title}: {len(files)} {desc}: {show(files)}")
    pairs = list(scan.pairs)
    bad: dict[str, list[str]] = {}
    if verify and pairs:
        report.log(f"  {title}: decoding {len(pairs)} pairs ...")
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
                Progress(len(pairs), desc=f"decoding {title}", unit="pair") as bar:
            for pair, errs in zip(pairs, pool.map(_verify_pair, pairs)):
                if errs:
                    bad[pair.key] = errs
                bar.update(1)
        for key, errs in bad.items():
            problems.extend(f"{title}: {e}" for e in errs)
        pairs = [p for p in pairs if p.key not in bad]
    if expected is not None and len(scan.pairs) != expected:
        problems.append(f"{title}: found {len(scan.pairs)} pairs, the official set has {expected}")
    report.counts[title] = {"found": len(scan.pairs), "kept": len(pairs), "expected": expected or 0,
                            "unmatched": sum(len(v) for v in scan.unmatched.values()), "undecodable": len(bad)}
    if not pairs:   # never write (or with --overwrite replace a good set by) empty folders
        raise DataError(f"{title}: no usable image pair (found {len(scan.pairs)}, "
                        f"{len(bad)} undecodable); nothing was written" + "".join(f"\n  {p}" for p in problems))
    if problems:
        if strict:
            raise DataError(f"{title}: {len(problems)} problem(s) (--strict):\n  " + "\n  ".join(problems))
        for p in problems:
            report.warn(p)
        report.warn(f"{title}: continuing with {len(pairs)} good pair(s); use --strict to stop on problems")
    else:
        report.log(f"  {title}: {len(pairs)} pairs OK" + (f" (official {expected})" if expected else ""))
    return pairs


def describe_folder(path: Path, limit: int = 12) -> str:
    """A short listing of a folder, for 'layout not recognised' messages."""
    if not path.is_dir():
        return f"'{path}' does not exist"
    names = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(path))
    return f"'{path}' contains: {show(names, limit) or '(nothing)'}"
