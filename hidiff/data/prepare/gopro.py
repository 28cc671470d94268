"""GoPro (Nah et al. 2017): recognise the archive, check it, write training crops and splits.

Accepted source layouts (``--src`` may be the folder itself or its parent):

* the official archive ``GOPRO_Large/{train,test}/<scene>/{blur,blur_gamma,sharp}/<frame>.png``;
  the input is ``blur`` (what Restormer/HI-Diff train and test on) unless
  ``--gopro-blur blur_gamma``; keys are ``<scene>-<frame>``, as in the
  Restormer/HI-Diff copies;
* the Restormer/HI-Diff README layout ``GoPro/{train,test}/{input,target}/<scene>-<frame>.png``
  (``test/GoPro/{input,target}`` is accepted too).

Written under ``--dst`` (what the option files read)::

    GoPro/train/{input,target}         whole training frames (minus validation scenes)
    GoPro/val/{input,target}           whole frames of the held-out training scenes
    GoPro/crops/train/{input,target}   512² crops, stride 256, 8 per frame (docs/architecture.md 3.2)
    GoPro/crops/val/{input,target}     256² centre crops of the validation frames
    test/GoPro/{input,target}          the 1111 test pairs

``--lmdb`` adds ``<folder>.lmdb`` for the folders option files read (crops and
test), not for the whole-frame copies.

With ``--official-test-val`` the official recipe is reproduced instead: all
training scenes are used for training and ``crops/val`` holds 256² centre
crops of the *test* images (validation then leaks the benchmark; a warning
says so).
"""
from __future__ import annotations

from pathlib import Path

from hidiff.data.prepare.checks import (
    ABSENT_SPLIT, PrepareReport, SplitScan, check_split, describe_folder, index_folder, match_roles, require_some)
from hidiff.data.prepare.crops import write_center_crops, write_grid_crops
from hidiff.data.prepare.placing import PrepareOptions, build_lmdbs, write_pair_folders
from hidiff.data.prepare.staging import Staging, staged
from hidiff.data.prepare.val_split import split_by_scene
from hidiff.errors import DataError
from hidiff.utils.atomic import atomic_write_text

ROOT_NAMES = ("GOPRO_Large", "GoPro_Large", "GoPro", "GOPRO", "gopro")
BLUR_FOLDERS = ("blur", "blur_gamma")
LEAK_WARNING = ("--official-test-val: validation crops are cut from the GoPro TEST set, as in the official "
                "HI-Diff/Restormer recipe; checkpoint selection on them leaks the benchmark into training")


def _is_large(root: Path) -> bool:
    """Whether ``root`` is the official archive's layout (either split may be missing)."""
    return any(split.is_dir() and any((d / "sharp").is_dir() for d in split.iterdir() if d.is_dir())
               for split in (root / "train", root / "test"))


def _readme_split_dir(root: Path, split: str) -> Path | None:
    for cand in (root / split, root / split / "GoPro"):
        if (cand / "input").is_dir() or (cand / "target").is_dir():
            return cand
    return None


def find_gopro_root(src: Path) -> tuple[Path, str]:
    """``(root, 'large'|'readme')`` for a GoPro source folder, or a DataError explaining the layouts."""
    for root in [src] + [src / n for n in ROOT_NAMES]:
        if not root.is_dir():
            continue
        if _is_large(root):
            return root, "large"
        if _readme_split_dir(root, "train") or _readme_split_dir(root, "test"):
            return root, "readme"
    raise DataError(
        f"GoPro: layout not recognised under '{src}'. Expected GOPRO_Large/{{train,test}}/<scene>/{{blur,sharp}}/"
        f"*.png (official archive) or GoPro/{{train,test}}/{{input,target}}/*.png (Restormer/HI-Diff README); "
        f"{describe_folder(src)}")


def scan_large(root: Path, split: str, blur: str) -> SplitScan:
    """Scan ``root/split/<scene>/{blur,sharp}`` into keys ``<scene>-<frame>``."""
    files: dict[str, dict[str, Path]] = {"input": {}, "target": {}}
    scenes: dict[str, str] = {}
    broken: list[str] = []
    dups: list[str] = []
    for scene_dir in sorted(d for d in (root / split).iterdir() if d.is_dir()):
        inp, tgt = scene_dir / blur, scene_dir / "sharp"
        if not inp.is_dir() or not tgt.is_dir():
            broken.append(f"{scene_dir} (needs {blur}/ and sharp/)")
            continue
        for role, folder in (("input", inp), ("target", tgt)):
            for stem, path in index_folder(folder, duplicates=dups).items():
                key = f"{scene_dir.name}-{stem}"
                files[role][key] = path
                scenes[key] = scene_dir.name
    pairs, unmatched = match_roles(files, scene_of=scenes.get)
    if broken:
        unmatched["scene folder(s) missing a sub-folder"] = broken
    if dups:
        unmatched["file(s) sharing a stem"] = dups
    return SplitScan("GoPro", split, pairs, unmatched)


def _scene_from_key(key: str) -> str:
    return key.rsplit("-", 1)[0] if "-" in key else ""


def scan_readme(folder: Path, split: str) -> SplitScan:
    """Scan ``<folder>/{input,target}`` (keys = file stems, scene = stem before the last '-')."""
    missing = [str(folder / r) for r in ("input", "target") if not (folder / r).is_dir()]
    if missing:
        return SplitScan("GoPro", split, [], {"missing folder(s)": missing})
    dups: list[str] = []
    files = {r: index_folder(folder / r, duplicates=dups) for r in ("input", "target")}
    pairs, unmatched = match_roles(files, scene_of=_scene_from_key)
    if dups:
        unmatched["file(s) sharing a stem"] = dups
    return SplitScan("GoPro", split, pairs, unmatched)


def planned_folders(scans: dict[str, SplitScan], opts: PrepareOptions) -> list[Path]:
    """Every output folder a run with these scans writes (checked against ``--dst`` before any work)."""
    g, roles = opts.dst / "GoPro", ("input", "target")
    roots, lmdb_roots = [], []
    if scans["train"].pairs:
        roots += [g / "train", g / "crops" / "train"]
        lmdb_roots.append(g / "crops" / "train")
        if not opts.official_test_val and opts.val_scenes:
            roots += [g / "val", g / "crops" / "val"]
            lmdb_roots.append(g / "crops" / "val")
    if scans["test"].pairs:
        roots.append(opts.dst / "test" / "GoPro")
        lmdb_roots.append(opts.dst / "test" / "GoPro")
        if opts.official_test_val:
            roots.append(g / "crops" / "val")
            lmdb_roots.append(g / "crops" / "val")
    folders = [r / role for r in roots for role in roles]
    if opts.lmdb:
        folders += [r / f"{role}.lmdb" for r in lmdb_roots for role in roles]
    return folders


def retired_folders(scans: dict[str, SplitScan], opts: PrepareOptions) -> list[Path]:
    """The validation sets derived from this source that a run with these options does not write: an earlier
    preparation's copy would stay and be read as this one's (held-out scenes now trained on, or test crops)."""
    if not scans["train"].pairs:
        return []
    written = {folder.parent for folder in planned_folders(scans, opts)}
    g = opts.dst / "GoPro"
    return [root for root in (g / "val", g / "crops" / "val") if root not in written]


def _write_source_note(stage: Staging, folder: Path, text: str) -> None:
    atomic_write_text(stage.file(folder / "SOURCE.txt"), text + "\n")


def prepare_gopro(src: Path, opts: PrepareOptions) -> PrepareReport:
    """Check the GoPro source and write the prepared layout (all or nothing); see the module doc."""
    if opts.gopro_blur not in BLUR_FOLDERS:
        raise DataError(f"--gopro-blur must be one of {BLUR_FOLDERS}, got {opts.gopro_blur!r}")
    report = PrepareReport("GoPro", opts.log)
    root, layout = find_gopro_root(Path(src))
    report.note(f"GoPro: {'official GOPRO_Large' if layout == 'large' else 'README input/target'} layout at {root}")
    scans: dict[str, SplitScan] = {}
    for split in ("train", "test"):
        if layout == "large":
            if (root / split).is_dir():
                scans[split] = scan_large(root, split, opts.gopro_blur)
        else:
            folder = _readme_split_dir(root, split)
            if folder is not None:
                scans[split] = scan_readme(folder, split)
        if split not in scans:
            scans[split] = SplitScan("GoPro", split, [], {ABSENT_SPLIT: [str(root / split)]})
    with staged(opts.dst, opts.overwrite, planned_folders(scans, opts), retired_folders(scans, opts)) as stage:
        _check_and_write(scans, opts, report, stage)
    return report


def _check_and_write(scans: dict[str, SplitScan], opts: PrepareOptions, report: PrepareReport,
                     stage: Staging) -> None:
    checked = {s: check_split(scan, report, strict=opts.strict, verify=opts.verify, workers=opts.workers)
               for s, scan in scans.items()}
    require_some(list(scans.values()), list(checked.values()))
    train, test = checked["train"], checked["test"]
    dst = opts.dst
    lmdb_folders: list[Path] = []
    if not train:
        train_pairs, val_pairs, val_scenes = [], [], []
    elif opts.official_test_val:
        report.warn(LEAK_WARNING)
        train_pairs, val_pairs, val_scenes = train, [], []
    else:
        train_pairs, val_pairs, val_scenes = split_by_scene(train, opts.val_scenes, "GoPro")
        report.note(f"GoPro: validation = {len(val_pairs)} frames of the held-out training scene(s) "
                    f"{', '.join(val_scenes) or '(none)'}; training = {len(train_pairs)} frames")
    if train_pairs:
        write_pair_folders(train_pairs, dst / "GoPro" / "train", opts, report, stage)
        lmdb_folders += write_grid_crops(train_pairs, dst / "GoPro" / "crops" / "train", opts.crop_size,
                                         opts.crop_stride, stage=stage, workers=opts.workers, report=report)
    if val_pairs:
        write_pair_folders(val_pairs, dst / "GoPro" / "val", opts, report, stage)
        val_dirs = write_center_crops(val_pairs, dst / "GoPro" / "crops" / "val", opts.val_crop,
                                      stage=stage, workers=opts.workers, report=report)
        lmdb_folders += val_dirs
        _write_source_note(stage, dst / "GoPro" / "crops" / "val", f"{opts.val_crop}x{opts.val_crop} centre "
                           f"crops of the held-out TRAINING scenes {', '.join(val_scenes)} (no test image)")
    if test:
        lmdb_folders += write_pair_folders(test, dst / "test" / "GoPro", opts, report, stage)
        if opts.official_test_val:
            lmdb_folders += write_center_crops(test, dst / "GoPro" / "crops" / "val", opts.val_crop,
                                               stage=stage, workers=opts.workers, report=report)
            _write_source_note(stage, dst / "GoPro" / "crops" / "val", "LEAKAGE: " + LEAK_WARNING)
    if opts.lmdb:
        build_lmdbs(lmdb_folders, report, stage)
    report.save(stage.file(dst / "reports" / "prepare_gopro.json"))
