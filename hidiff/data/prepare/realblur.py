"""RealBlur-J and RealBlur-R (Rim et al. 2020): 3758 train / 980 test pairs each.

Accepted source layouts (``--src`` may be the folder itself or its parent ``RealBlur``):

* the official archive: ``RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene*/{blur,gt}/{blur,gt}_N.png``
  (``RealBlur-R_BM3D_ECC_IMCORR_centroid_itensity_ref`` for -R) next to the split
  lists ``RealBlur_{J,R}_{train,test}_list.txt``, whose lines are
  ``<gt path> <blur path>`` relative to the list's folder; keys are ``<scene>_<N>``;
* the Restormer/HI-Diff layout ``RealBlur_J/{train,test}/{input,target}`` (also
  ``{train,test}/RealBlur_J/{input,target}``).

Written under ``--dst``::

    RealBlur/train/RealBlur_{J,R}/{input,target}   training pairs (minus validation scenes)
    RealBlur/val/RealBlur_{J,R}/{input,target}     whole held-out training scenes
    test/RealBlur_{J,R}/{input,target}             the 980 test pairs

``--official-test-val`` reproduces the official recipe (validation = the test
set, all training scenes trained on) and warns about the leakage.
"""
from __future__ import annotations

import re
from pathlib import Path

from hidiff.data.prepare.checks import (
    ABSENT_SPLIT, Pair, PrepareReport, SplitScan, check_split, describe_folder, index_folder, match_roles,
    require_some)
from hidiff.data.prepare.placing import PrepareOptions, build_lmdbs, write_pair_folders
from hidiff.data.prepare.staging import Staging, staged
from hidiff.data.prepare.val_split import split_by_scene
from hidiff.errors import DataError

VARIANTS = ("J", "R")
SPLITS = ("train", "test")
_SCENE = re.compile(r"^(scene\d+)")
LEAK_WARNING = ("--official-test-val: RealBlur_{v} validation = the TEST set, as in the official HI-Diff "
                "recipe; checkpoint selection on it leaks the benchmark into training")


def list_file(root: Path, variant: str, split: str) -> Path:
    return root / f"RealBlur_{variant}_{split}_list.txt"


def _key_and_scene(gt_rel: str) -> tuple[str, str]:
    parts = Path(gt_rel).parts
    scene = parts[-3] if len(parts) >= 3 else ""
    number = Path(gt_rel).stem
    number = number[3:] if number.startswith("gt_") else number
    return (f"{scene}_{number}" if scene else number), scene


def scan_official(root: Path, variant: str, split: str) -> tuple[SplitScan, set[Path]]:
    """Pairs listed in the split list; also returns every listed file (to find unlisted extras)."""
    lst = list_file(root, variant, split)
    name = f"RealBlur_{variant}"
    pairs: list[Pair] = []
    missing: list[str] = []
    malformed: list[str] = []
    dups: list[str] = []
    listed: set[Path] = set()
    seen: set[str] = set()
    for lineno, line in enumerate(lst.read_text(encoding="utf-8").splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            malformed.append(f"{lst.name}:{lineno}: {line.strip()!r}")
            continue
        gt, blur = root / tokens[0], root / tokens[1]
        listed.update((gt, blur))
        absent = [str(p) for p in (gt, blur) if not p.is_file()]
        if absent:
            missing.extend(absent)
            continue
        key, scene = _key_and_scene(tokens[0])
        if key in seen:
            dups.append(f"{lst.name}:{lineno}: key '{key}'")
            continue
        seen.add(key)
        pairs.append(Pair(key, {"input": blur, "target": gt}, scene))
    unmatched: dict[str, list[str]] = {}
    if missing:
        unmatched[f"file(s) listed in {lst.name} but missing"] = missing
    if malformed:
        unmatched["malformed list line(s) (expected '<gt> <blur>')"] = malformed
    if dups:
        unmatched["duplicate pair(s)"] = dups
    return SplitScan(name, split, sorted(pairs, key=lambda p: p.key), unmatched), listed


def _unlisted(root: Path, listed: set[Path]) -> list[str]:
    """Images inside the listed data folders that neither list mentions."""
    tops = {root / p.relative_to(root).parts[0] for p in listed if len(p.relative_to(root).parts) >= 3}
    extra = []
    for top in tops:
        for sub in ("blur", "gt"):
            for folder in sorted(top.glob(f"*/{sub}")):
                extra.extend(str(p) for p in index_folder(folder).values() if p not in listed)
    return sorted(extra)


def _readme_dir(src: Path, variant: str, split: str) -> Path | None:
    name = f"RealBlur_{variant}"
    for root in (src, src / "RealBlur"):
        for cand in (root / name / split, root / split / name):
            if (cand / "input").is_dir() or (cand / "target").is_dir():
                return cand
    return None


def _scene_from_key(key: str) -> str:
    m = _SCENE.match(key)
    return m.group(1) if m else ""


def scan_readme(folder: Path, variant: str, split: str) -> SplitScan:
    name = f"RealBlur_{variant}"
    missing = [str(folder / r) for r in ("input", "target") if not (folder / r).is_dir()]
    if missing:
        return SplitScan(name, split, [], {"missing folder(s)": missing})
    dups: list[str] = []
    files = {r: index_folder(folder / r, duplicates=dups) for r in ("input", "target")}
    pairs, unmatched = match_roles(files, scene_of=_scene_from_key)
    if dups:
        unmatched["file(s) sharing a stem"] = dups
    return SplitScan(name, split, pairs, unmatched)


def find_official_root(src: Path, variant: str) -> Path | None:
    for root in (src, src / "RealBlur"):
        if any(list_file(root, variant, s).is_file() for s in SPLITS):
            return root
    return None


def scan_variant(src: Path, variant: str, report: PrepareReport) -> dict[str, SplitScan] | None:
    """Scans of both splits of one variant, or None if the variant is absent."""
    root = find_official_root(src, variant)
    scans: dict[str, SplitScan] = {}
    if root is not None:
        report.note(f"RealBlur_{variant}: official archive with split lists at {root}")
        listed_all: set[Path] = set()
        for split in SPLITS:
            if list_file(root, variant, split).is_file():
                scans[split], listed = scan_official(root, variant, split)
                listed_all |= listed
        extra = _unlisted(root, listed_all)
        if extra and "train" in scans:
            scans["train"].unmatched["image(s) listed in neither split list"] = extra
    else:
        for split in SPLITS:
            folder = _readme_dir(src, variant, split)
            if folder is not None:
                scans[split] = scan_readme(folder, variant, split)
        if not scans:
            return None
        report.note(f"RealBlur_{variant}: README input/target layout")
    for split in SPLITS:
        scans.setdefault(split, SplitScan(f"RealBlur_{variant}", split, [],
                                          {ABSENT_SPLIT: [f"RealBlur_{variant} {split}"]}))
    return scans


def prepare_realblur(src: Path, opts: PrepareOptions) -> PrepareReport:
    """Check RealBlur-J/-R (whichever are present) and write the prepared layout (all or nothing)."""
    src = Path(src)
    report = PrepareReport("RealBlur", opts.log)
    found = {v: scan_variant(src, v, report) for v in VARIANTS}
    if not any(found.values()):
        raise DataError(
            f"RealBlur: layout not recognised under '{src}'. Expected RealBlur_{{J,R}}_{{train,test}}_list.txt "
            f"next to RealBlur-J_ECC_IMCORR_centroid_itensity_ref/ (official archive) or "
            f"RealBlur_J/{{train,test}}/{{input,target}}; {describe_folder(src)}")
    with staged(opts.dst, opts.overwrite, planned_folders(found, opts), retired_folders(found, opts)) as stage:
        _check_and_write(src, found, opts, report, stage)
    return report


def _outputs(opts: PrepareOptions, name: str) -> tuple[Path, Path, Path]:
    """The train, val and test output roots of one variant."""
    return opts.dst / "RealBlur" / "train" / name, opts.dst / "RealBlur" / "val" / name, opts.dst / "test" / name


def planned_folders(found: dict[str, dict[str, SplitScan] | None], opts: PrepareOptions) -> list[Path]:
    """Every output folder a run with these scans writes (checked against ``--dst`` before any work)."""
    folders = []
    for variant, scans in found.items():
        if scans is None:
            continue
        train_out, val_out, test_out = _outputs(opts, f"RealBlur_{variant}")
        roots = []
        if scans["train"].pairs:
            roots.append(train_out)
            if opts.val_scenes and not opts.official_test_val:
                roots.append(val_out)
        if scans["test"].pairs:
            roots.append(test_out)
            if opts.official_test_val:
                roots.append(val_out)
        folders += [r / role for r in roots for role in ("input", "target")]
    if opts.lmdb:
        folders += [f.with_name(f.name + ".lmdb") for f in folders]
    return folders


def retired_folders(found: dict[str, dict[str, SplitScan] | None], opts: PrepareOptions) -> list[Path]:
    """The validation sets of the variants prepared here that this run does not write: an earlier preparation's
    copy would stay and be read as this one's (held-out scenes now trained on, or the test set)."""
    written = {folder.parent for folder in planned_folders(found, opts)}
    vals = [_outputs(opts, f"RealBlur_{variant}")[1] for variant, scans in found.items()
            if scans is not None and scans["train"].pairs]
    return [val for val in vals if val not in written]


def _check_and_write(src: Path, found: dict[str, dict[str, SplitScan] | None], opts: PrepareOptions,
                     report: PrepareReport, stage: Staging) -> None:
    lmdb_folders: list[Path] = []
    for variant, scans in found.items():
        name = f"RealBlur_{variant}"
        if scans is None:
            report.warn(f"{name} not found under '{src}'; only the other variant is prepared")
            continue
        train = check_split(scans["train"], report, strict=opts.strict, verify=opts.verify, workers=opts.workers)
        test = check_split(scans["test"], report, strict=opts.strict, verify=opts.verify, workers=opts.workers)
        require_some([scans["train"], scans["test"]], [train, test])
        if not train:
            train_pairs, val_pairs = [], []
        elif opts.official_test_val:
            report.warn(LEAK_WARNING.format(v=variant))
            train_pairs, val_pairs = train, test
        else:
            train_pairs, val_pairs, val_scenes = split_by_scene(train, opts.val_scenes, name)
            report.note(f"{name}: validation = {len(val_pairs)} pairs of the held-out training scene(s) "
                        f"{', '.join(val_scenes) or '(none)'}; training = {len(train_pairs)} pairs")
        for pairs, out in zip((train_pairs, val_pairs, test), _outputs(opts, name)):
            if pairs:
                lmdb_folders += write_pair_folders(pairs, out, opts, report, stage, roles=["input", "target"])
    if opts.lmdb:
        build_lmdbs(lmdb_folders, report, stage)
    report.save(stage.file(opts.dst / "reports" / "prepare_realblur.json"))
