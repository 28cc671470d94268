"""DPDD (Abuolaim & Brown 2020): 350 train / 74 val / 76 test dual-pixel scenes.

Accepted source layouts (``--src`` may be the folder itself or its parent):

* the official archive ``dd_dp_dataset_png/{train,val,test}_c/{source,target}`` (combined view
  and all-in-focus target) with ``{train,val,test}_{l,r}/source`` (the two
  dual-pixel views, file names optionally ending in ``_L``/``_R``);
* the Restormer layout ``{train,val,test}/{inputC,inputL,inputR,target}`` (e.g. under ``DPDD/``;
  ``{split}/DPDD/{inputC,...}`` as in Restormer's download is accepted too).

Written: ``<dst>/DPDD/{train,val,test}/{inputC,inputL,inputR,target}/<key>.png``
(the ``_L``/``_R`` suffixes dropped), read by ``DualPixelDataset``, which crops
on the fly (no crop folders).  The indoor/outdoor label files
(``indoor_labels.npy``/``outdoor_labels.npy``, or ``.txt``) are copied into
``DPDD/test`` when found anywhere under ``--src``; without them the
indoor/outdoor means cannot be reported, and a warning says so.
"""
from __future__ import annotations

from pathlib import Path

from hidiff.data.dual_pixel_dataset import view_stem
from hidiff.data.prepare.checks import (
    ABSENT_SPLIT, PrepareReport, SplitScan, check_split, describe_folder, index_folder, match_roles, require_some)
from hidiff.data.prepare.placing import PrepareOptions, place_file, write_pair_folders
from hidiff.data.prepare.staging import staged
from hidiff.errors import DataError

SPLITS = ("train", "val", "test")
ROLES = ("inputC", "inputL", "inputR", "target")
ROOT_NAMES = ("dd_dp_dataset_png", "dd_dp_dataset_canon", "DPDD", "dpdd")
LABEL_FILES = ("indoor_labels.npy", "outdoor_labels.npy", "indoor_labels.txt", "outdoor_labels.txt")


def _official_folders(root: Path, split: str) -> dict[str, Path]:
    return {"inputC": root / f"{split}_c" / "source", "inputL": root / f"{split}_l" / "source",
            "inputR": root / f"{split}_r" / "source", "target": root / f"{split}_c" / "target"}


def _restormer_folders(root: Path, split: str) -> dict[str, Path]:
    base = root / split / "DPDD" if (root / split / "DPDD").is_dir() else root / split
    return {role: base / role for role in ROLES}


def find_dpdd_root(src: Path) -> tuple[Path, str]:
    """``(root, 'official'|'restormer')`` or a DataError naming the expected layouts."""
    for root in [src] + [src / n for n in ROOT_NAMES]:
        if any((root / f"{s}_c").is_dir() for s in SPLITS):
            return root, "official"
        if any((root / s / "target").is_dir() or (root / s / "DPDD" / "target").is_dir() for s in SPLITS):
            return root, "restormer"
    raise DataError(
        f"DPDD: layout not recognised under '{src}'. Expected dd_dp_dataset_png/{{train,val,test}}_{{c,l,r}}/"
        f"{{source,target}} (official archive) or {{train,val,test}}/{{inputC,inputL,inputR,target}}; "
        f"{describe_folder(src)}")


def scan_split(folders: dict[str, Path], split: str) -> SplitScan:
    missing = [f"{role}: {folder}" for role, folder in folders.items() if not folder.is_dir()]
    if len(missing) == len(folders):
        return SplitScan("DPDD", split, [], {ABSENT_SPLIT: missing})
    if missing:
        return SplitScan("DPDD", split, [], {"missing folder(s)": missing})
    dups: list[str] = []
    files = {role: index_folder(folder, key=lambda p: view_stem(p.stem), duplicates=dups)
             for role, folder in folders.items()}
    pairs, unmatched = match_roles(files)
    if dups:
        unmatched["file(s) sharing a stem"] = dups
    return SplitScan("DPDD", split, pairs, unmatched)


def prepare_dpdd(src: Path, opts: PrepareOptions) -> PrepareReport:
    """Check DPDD and write the Restormer layout under ``<dst>/DPDD`` (all or nothing)."""
    src = Path(src)
    report = PrepareReport("DPDD", opts.log)
    root, layout = find_dpdd_root(src)
    report.note(f"DPDD: {layout} layout at {root}")
    make = _official_folders if layout == "official" else _restormer_folders
    scans = {split: scan_split(make(root, split), split) for split in SPLITS}
    planned = [opts.dst / "DPDD" / split / role for split, scan in scans.items() if scan.pairs for role in ROLES]
    with staged(opts.dst, opts.overwrite, planned) as stage:
        checked = {split: check_split(scan, report, strict=opts.strict, verify=opts.verify, workers=opts.workers)
                   for split, scan in scans.items()}
        require_some(list(scans.values()), list(checked.values()))
        for split, pairs in checked.items():
            if pairs:
                write_pair_folders(pairs, opts.dst / "DPDD" / split, opts, report, stage, roles=list(ROLES))
        labels = {}
        for name in LABEL_FILES:
            found = sorted(src.rglob(name))
            if found:
                labels[name] = found[0]
        if {"indoor_labels.npy", "outdoor_labels.npy"} <= set(labels) or \
                {"indoor_labels.txt", "outdoor_labels.txt"} <= set(labels):
            for name, path in labels.items():
                place_file(path, stage.file(opts.dst / "DPDD" / "test" / name), "copy")
            report.note(f"DPDD: indoor/outdoor labels copied from "
                        f"{sorted(str(p.parent) for p in labels.values())[0]}")
        else:
            report.warn("no indoor_labels/outdoor_labels files found under the source; DPDD indoor/outdoor "
                        "means need them (they ship with the Restormer copy of the test set) in DPDD/test")
        if opts.lmdb:
            report.note("DPDD: --lmdb ignored (DualPixelDataset reads the folders)")
        report.save(stage.file(opts.dst / "reports" / "prepare_dpdd.json"))
    return report
