"""HIDE (Shen et al. 2019) test set: 2025 pairs, used to test GoPro-trained models.

Accepted source layouts (``--src`` may be the folder itself or its parent):

* the official archive ``HIDE_dataset/test/{test-close-ups,test-long-shot}/<name>.png``
  with the sharp images in ``HIDE_dataset/GT/<name>.png`` (``GT`` also holds the
  training targets, which are ignored);
* the Restormer/HI-Diff layout ``test/HIDE/{input,target}`` (or ``HIDE/{input,target}``).

Written: ``<dst>/test/HIDE/{input,target}`` and ``test/HIDE/subsets.json``
(``{key: "close-ups"|"long-shot"}``, official layout only).  Only the test
split is prepared: HI-Diff never trains on HIDE.
"""
from __future__ import annotations

import json
from pathlib import Path

from hidiff.data.prepare.checks import (
    PrepareReport, SplitScan, check_split, describe_folder, index_folder, match_roles)
from hidiff.data.image_io import list_images
from hidiff.data.prepare.placing import PrepareOptions, build_lmdbs, write_pair_folders
from hidiff.data.prepare.staging import staged
from hidiff.errors import DataError
from hidiff.utils.atomic import atomic_write_text

ROOT_NAMES = ("HIDE_dataset", "HIDE", "test/HIDE")
SUBSETS = ("test-close-ups", "test-long-shot")
ROLES = ("input", "target")


def find_hide_root(src: Path) -> tuple[Path, str]:
    """``(root, 'official'|'readme')`` or a DataError naming the expected layouts."""
    for root in [src] + [src / n for n in ROOT_NAMES]:
        if (root / "GT").is_dir() and (root / "test").is_dir():
            return root, "official"
        if (root / "input").is_dir() or (root / "target").is_dir():
            return root, "readme"
    raise DataError(
        f"HIDE: layout not recognised under '{src}'. Expected HIDE_dataset/test/{{test-close-ups,test-long-shot}}/"
        f"*.png + HIDE_dataset/GT/*.png (official archive) or test/HIDE/{{input,target}}/*.png; "
        f"{describe_folder(src)}")


def scan_official(root: Path) -> tuple[SplitScan, dict[str, str]]:
    """Pair the two test subsets with ``GT`` by file name; return the scan and the subset of each key."""
    dups: list[str] = []
    inputs: dict[str, Path] = {}
    subset_of: dict[str, str] = {}
    clashing: set[str] = set()
    missing_dirs = []
    for sub in SUBSETS:
        folder = root / "test" / sub
        if not folder.is_dir():
            missing_dirs.append(str(folder))
            continue
        found = index_folder(folder, duplicates=dups)
        clashing |= {p.stem for p in list_images(folder)} - set(found)  # a name two files share here
        for key, path in found.items():
            if key in inputs:
                dups.append(f"{inputs[key]} and {path}")
                clashing.add(key)
            inputs[key] = path
            subset_of[key] = sub.replace("test-", "")
    # which file of a shared name is the pair's is not for us to guess: every one of them is left out
    for key in clashing:
        inputs.pop(key, None)
        subset_of.pop(key, None)
    gt_dups: list[str] = []
    gt = index_folder(root / "GT", duplicates=gt_dups)
    # GT also holds HIDE's training targets: a name shared there matters only for a test input
    gt_clashing = {p.stem for p in list_images(root / "GT")} - set(gt)
    dups += [d for d in gt_dups if any(d.endswith(f"(key '{k}')") for k in gt_clashing & set(inputs))]
    pairs, unmatched = match_roles({"input": inputs, "target": {k: gt[k] for k in gt if k in inputs}}, anchor="input")
    missing_gt = sorted(str(inputs[k]) for k in inputs if k not in gt and k not in gt_clashing)
    unmatched.pop("input file(s) without target", None)
    if missing_gt:
        unmatched[f"test input(s) without a GT image in '{root / 'GT'}'"] = missing_gt
    if missing_dirs:
        unmatched["missing test sub-folder(s)"] = missing_dirs
    if dups:
        unmatched["file(s) sharing a name"] = dups
    return SplitScan("HIDE", "test", pairs, unmatched), subset_of


def scan_readme(root: Path) -> SplitScan:
    missing = [str(root / r) for r in ("input", "target") if not (root / r).is_dir()]
    if missing:
        return SplitScan("HIDE", "test", [], {"missing folder(s)": missing})
    dups: list[str] = []
    files = {r: index_folder(root / r, duplicates=dups) for r in ("input", "target")}
    pairs, unmatched = match_roles(files)
    if dups:
        unmatched["file(s) sharing a stem"] = dups
    return SplitScan("HIDE", "test", pairs, unmatched)


def prepare_hide(src: Path, opts: PrepareOptions) -> PrepareReport:
    """Check the HIDE test set and write ``test/HIDE/{input,target}`` (all or nothing)."""
    report = PrepareReport("HIDE", opts.log)
    root, layout = find_hide_root(Path(src))
    report.note(f"HIDE: {layout} layout at {root}")
    subset_of: dict[str, str] = {}
    if layout == "official":
        scan, subset_of = scan_official(root)
    else:
        scan = scan_readme(root)
    out = opts.dst / "test" / "HIDE"
    planned = [out / role for role in ROLES]
    if opts.lmdb:
        planned += [out / f"{role}.lmdb" for role in ROLES]
    with staged(opts.dst, opts.overwrite, planned) as stage:
        pairs = check_split(scan, report, strict=opts.strict, verify=opts.verify, workers=opts.workers)
        folders = write_pair_folders(pairs, out, opts, report, stage, roles=list(ROLES))
        if subset_of:
            kept = {p.key: subset_of[p.key] for p in pairs}
            atomic_write_text(stage.file(out / "subsets.json"), json.dumps(kept, indent=1, sort_keys=True) + "\n")
        if opts.lmdb:
            build_lmdbs(folders, report, stage)
        report.save(stage.file(opts.dst / "reports" / "prepare_hide.json"))
    return report
