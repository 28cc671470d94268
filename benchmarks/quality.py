"""Quality benchmark: the papers' ablations at a small, fixed CPU budget, with honest statistics.

    python benchmarks/quality.py --jobs 2                 # the full sweep: 5 variants x 3 seeds, 21 training runs
    python benchmarks/quality.py --quick --seeds 2        # the same pipeline at a few iterations (minutes)

The learned variants are the sweep ``benchmarks/sweeps/quality.yml`` (base
``quality_stage2.yml``): HI-Diff-small with T in {1, 4, 8} diffusion steps (each
from its own stage-1 run per seed), HI-Diff-small with a single-scale prior
(``prior_pyramid: false``), and the same U-Net without prior (``use_prior:
false``, trained for the stage-1 + stage-2 iterations so every U-Net gets the
same number of updates).  ``hidiff.sweep`` trains them through the real trainer,
evaluates them with the test runner and compares each with the prior-free
baseline: mean +- std over seeds, paired per-image differences with 95 %
intervals over images and seeds (hidiff/evaluation/intervals.py).  The budget (iterations, batch, crops, learning rate) lives
in those option files.

This script prepares the data (synthetic camera-shake blur of ``--train`` photos
for training, frozen blurry/sharp pairs of ``--test`` photos with their true
kernels; default: the scikit-image photos) and adds the classical references to
the table: Wiener and Richardson-Lucy deconvolution given the true kernel
(balance / iterations tuned once on pairs made from *training* photos).

Writes results.md, results.csv, per_image.csv and the chart into
``<work>/experiments/sweeps/quality/``.  Running it again reuses finished runs
(photos given with ``--train`` get a folder named by their contents, so other
photos train afresh) and finished evaluations while the test pairs' files are
the same (another ``--test`` or ``--test-crop`` evaluates again).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "benchmarks" / "sweeps"


def classical_rows(test_set: Path, tuned: Dict[str, float]) -> Dict[str, Dict[str, float]]:
    """Mean GoPro-protocol scores of Wiener (plain and edge-tapered) and Richardson-Lucy (true kernels) on the
    frozen test pairs."""
    from hidiff.data.image_io import read_image_uint8
    from hidiff.evaluation.deconvolution import METHODS, deconvolve, label
    from hidiff.evaluation.protocols import get_protocol

    protocol = get_protocol("gopro")
    scores: Dict[str, List[dict]] = {m: [] for m in METHODS}
    for gt_path in sorted((test_set / "target").glob("*.png")):
        gt = read_image_uint8(gt_path)
        lq = read_image_uint8(test_set / "input" / gt_path.name)
        kernel = np.load(test_set / "kernels" / f"{gt_path.stem}.npy")
        for method in scores:
            scores[method].append(protocol.score_pair(deconvolve(lq, kernel, method, tuned[method]), gt))
    return {label(m, tuned[m]): {k: float(np.mean([s[k] for s in rows])) for k in rows[0]}
            for m, rows in scores.items()}


def downscaled_photos(src: Path, dst: Path, short_side: int) -> Path:
    """Copies of the photos of ``src`` whose short side is at most ``short_side`` (area resampling).

    Smaller photos make every training sample cheaper to read and put more scene
    into each small crop; train and test photos are treated alike.
    """
    from hidiff.data.image_io import list_images, read_image_uint8, shrink_to, write_png

    dst.mkdir(parents=True, exist_ok=True)
    for path in list_images(src):
        target = dst / f"{path.stem}.png"
        if not target.exists():
            write_png(target, shrink_to(read_image_uint8(path), short_side, short=True))
    if (src / "ATTRIBUTION.md").is_file():
        (dst / "ATTRIBUTION.md").write_bytes((src / "ATTRIBUTION.md").read_bytes())
    return dst


def default_photos(work: Path, which: str) -> Path:
    from hidiff.runners.demo import TEST_PHOTOS, TRAIN_PHOTOS, copy_photos
    folder = work / f"skimage_{which}"
    copy_photos(TRAIN_PHOTOS if which == "train" else TEST_PHOTOS, folder)
    return folder


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, default=None, help="sharp training photos (default: scikit-image's)")
    ap.add_argument("--test", type=Path, default=None, help="sharp test photos (default: scikit-image's)")
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "quality", help="work folder")
    ap.add_argument("--sweep", type=Path, default=SWEEPS / "quality.yml", help="the sweep file")
    ap.add_argument("--opt", type=Path, default=SWEEPS / "quality_stage2.yml", help="its base option file")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per variant (default: the sweep file's, 3)")
    ap.add_argument("--jobs", type=int, default=2, help="training runs in parallel")
    ap.add_argument("--quick", action="store_true",
                    help="every run trains 4 iterations on 32x32 crops and tests on 96x96 crops: checks the "
                         "pipeline end to end in minutes; the numbers mean nothing")
    ap.add_argument("--test-crop", type=int, default=256, help="centre crop of each test photo (0: whole photo)")
    ap.add_argument("--short-side", type=int, default=320,
                    help="downscale train and test photos to this short side first (0: keep the originals)")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from hidiff.data.synthetic_set import freeze_synthetic_set
    from hidiff.errors import HidiffError
    from hidiff.evaluation.deconvolution import tune_classical
    from hidiff.sweep import RunFailed, SweepRunner, load_sweep, write_report

    def log(msg: str) -> None:
        print(msg, flush=True)

    work = args.work.resolve()
    for flag, folder in (("--train", args.train), ("--test", args.test)):
        if folder is not None and not folder.is_dir():
            print(f"error: {flag} {folder}: not a folder of photos", file=sys.stderr)
            return 2
    # photos given with --train/--test get folders named by their contents, so other photos change the runs'
    # options (trained afresh) and the test pairs (evaluated again) instead of joining the copies of earlier
    # ones under the same path; the default scikit-image photos keep the plain names
    from hidiff.utils.hashing import tree_sha256
    short = f"_{args.short_side}" if args.short_side else ""
    train_dir = work / (f"train_sharp{short}" + (f"_{tree_sha256(args.train)[:12]}" if args.train else ""))
    test_copies = work / (f"test_sharp{short}" + (f"_{tree_sha256(args.test)[:12]}" if args.test else ""))
    test_set = work / "test_set"
    overrides = [f"datasets.train.sharp_root={json.dumps(str(train_dir))}",
                 f"path.experiments_root={json.dumps(str(work / 'experiments'))}"]
    crop = args.test_crop or None
    if args.quick:
        overrides += ["train.total_iter=4", "train.scheduler.periods=[4]", "logger.save_checkpoint_freq=4",
                      "logger.print_freq=1", "datasets.train.gt_size=32"]
        crop = 96
    eval_overrides = [f"datasets.test_1.dataroot_lq={json.dumps(str(test_set / 'input'))}",
                      f"datasets.test_1.dataroot_gt={json.dumps(str(test_set / 'target'))}"]
    try:
        sweep = load_sweep(args.sweep, args.opt, overrides, eval_overrides, seeds=args.seeds)
        runner = SweepRunner(sweep, jobs=args.jobs, log=log)
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = sweep.runs[0].options.datasets["train"].params     # the training blur, shared by every run
    kernel_size, noise, seed = int(data["kernel_size"]), data["noise_sigma"], int(data["seed"])
    noise = list(noise) if isinstance(noise, (list, tuple)) else [float(noise), float(noise)]

    log("== data")
    work.mkdir(parents=True, exist_ok=True)
    train_src = (args.train or default_photos(work, "train")).resolve()
    test_src = (args.test or default_photos(work, "test")).resolve()
    if args.short_side:
        downscaled_photos(train_src, train_dir, args.short_side)
        test_dir = downscaled_photos(test_src, test_copies, args.short_side)
    else:
        train_dir.mkdir(parents=True, exist_ok=True)
        for p in train_src.iterdir():
            if p.is_file() and not (train_dir / p.name).exists():
                (train_dir / p.name).write_bytes(p.read_bytes())
        test_dir = test_src
    freeze_synthetic_set(test_dir, test_set, seed=seed + 1000, crop=crop, kernel_size=kernel_size,
                         noise_sigma=tuple(noise), overwrite=True, log=lambda m: log("  " + m.strip()))

    log(f"== sweep '{sweep.name}': {len(sweep.variants)} variants x {len(sweep.seeds)} seeds, "
        f"{len(sweep.runs)} training runs")
    try:
        runner.execute()
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    log("== classical references")
    tuned = tune_classical(train_dir, kernel_size, noise, seed, crop or 256, log)
    set_name = next(d.name for d in sweep.runs[-1].eval_options.datasets.values() if d.phase == "test")
    files = write_report(sweep.folder, extra_rows={set_name: classical_rows(test_set, tuned)})
    print()
    print(files["results.md"].read_text(encoding="utf-8"))
    log("written: " + ", ".join(str(p) for p in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
