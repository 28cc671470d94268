"""The demo: synthetic camera-shake blur on photos shipped with scikit-image -> stage 1 -> stage 2 -> test.

Everything it needs ships in pip wheels, so it runs on a fresh machine without
internet.  Training photos and test photos are disjoint (the stereo pair
motorcycle_left/right stays in one split).

Its run folders ``experiments/demo_stage1`` and ``demo_stage2`` are never deleted: a run
stopped part way (Ctrl-C) continues when the same command is run again (the trainer's
``--resume auto``), a finished one is kept, and one trained with other options (another
``--iters1``/``--iters2``) is moved to ``<name>_archived_<time>`` by a fresh training start.
Stage 2 continues only on a stage 1 that was already finished and kept.  The arguments are
checked, and a folder that a running training holds is refused, before anything is written.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import cv2
import numpy as np

from hidiff.config import Options, load_options
from hidiff.data.image_io import read_image_uint8, shrink_to, to_uint8, write_png
from hidiff.data.synthetic_dataset import SyntheticBlurDataset
from hidiff.engine.checkpoint_store import latest_complete
from hidiff.engine.run_folder import options_changed_since
from hidiff.errors import EXIT_BAD_INPUT, ConfigError, HidiffError
from hidiff.evaluation.protocols import get_protocol
from hidiff.runners.test_runner import run_test
from hidiff.utils.atomic import atomic_write_bytes
from hidiff.utils.folder_lock import LOCKING, try_lock_folder

TRAIN_PHOTOS = ("astronaut.png", "coffee.png", "motorcycle_left.png", "motorcycle_right.png",
                "hubble_deep_field.jpg", "retina.jpg", "ihc.png",
                # grayscale textures, read as RGB: fur-, grass- and stone-like detail the colour photos lack
                "camera.png", "brick.png", "grass.png", "gravel.png", "coins.png")
TEST_PHOTOS = ("chelsea.png", "rocket.jpg")
#: the demo's blur: a fixed pool of camera-shake kernels shared by training and test (options/demo_*.yml)
KERNEL_SIZE, KERNEL_POOL, POOL_SEED = 11, 8, 7
#: training photos are downscaled to this longest side (faster decoding, denser detail per crop)
TRAIN_MAX_SIDE = 320


def skimage_data_dir() -> Path:
    import skimage  # deferred: slow to import, only the demo's photo copy needs it
    return Path(skimage.__file__).parent / "data"


def copy_photos(names: Sequence[str], dst: Path, max_side: int | None = None) -> List[Path]:
    """Copy bundled photos to ``dst`` as RGB PNG, optionally downscaled to ``max_side``."""
    src = skimage_data_dir()
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        if not (src / name).is_file():
            raise FileNotFoundError(f"scikit-image photo {src / name} is missing from the installed wheel")
        target = dst / (Path(name).stem + ".png")
        if not target.exists():
            img = read_image_uint8(src / name)
            write_png(target, shrink_to(img, max_side) if max_side else img)
        out.append(target)
    return out


def freeze_test_pairs(sharp_dir: Path, out_dir: Path, *, kernel_size: int, seed: int) -> int:
    """Write the frozen blurry/sharp test pairs (the synthetic dataset's test phase) as PNGs."""
    ds = SyntheticBlurDataset(sharp_root=str(sharp_dir), phase="test", kernel_size=kernel_size,
                              noise_sigma=0.001, seed=seed, kernel_pool=KERNEL_POOL, kernel_pool_seed=POOL_SEED,
                              name="demo_test")
    for i in range(len(ds)):
        item = ds[i]
        write_png(out_dir / "input" / f"{item['key']}.png", to_uint8(item["lq"]))
        write_png(out_dir / "target" / f"{item['key']}.png", to_uint8(item["gt"]))
    return len(ds)


#: the option files' per-process batch; with one process the demo doubles it to keep the global batch at 8
BATCH_PER_PROCESS = 4
ONE_PROCESS = ["-o", f"datasets.train.batch_size_per_gpu={2 * BATCH_PER_PROCESS}"]


def training_command(script_args: List[str], processes: int) -> List[str]:
    """The argv (after the interpreter) that trains with ``processes`` data-parallel CPU processes.

    The demo's networks are tiny, so one intra-op thread per process is fastest
    (one process: 1.65 it/s with one thread, 0.95 with two), and two gloo
    processes on two cores train about twice as fast as one (3.1 vs 1.65 it/s
    at a global batch of 8).
    """
    if processes <= 1:
        return [*script_args, *ONE_PROCESS]
    return ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *script_args,
            "--launcher", "pytorch"]


def run_script(args: List[str]) -> None:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("OMP_NUM_THREADS", "1")  # set it yourself to override
    proc = subprocess.run([sys.executable, *args], env=env)
    if proc.returncode != 0:
        raise SystemExit(f"demo: '{' '.join(args)}' failed with exit code {proc.returncode} (a training "
                         f"stopped by Ctrl-C continues when the same demo command is run again)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of iterations, got {text!r}")
    return value


def stage_overrides(iters: int | None) -> List[str]:
    """The ``-o`` overrides of a stage's iteration count (none: the option file's)."""
    return [f"train.total_iter={iters}", f"train.scheduler.periods=[{iters}]"] if iters else []


def plan_stage(options: Options, label: str, may_continue: bool) -> tuple[str, bool]:
    """``(--resume value, finished)`` for a stage's run folder, after saying what happens to it; ConfigError if a
    running training holds it."""
    folder = Path(options.path.experiments_root) / options.name
    if LOCKING and folder.is_dir():
        fd = try_lock_folder(folder)
        if fd is None:
            raise ConfigError(f"{folder}: a training is using this run folder now; wait for it to end (the demo "
                              f"changed nothing)")
        os.close(fd)
    unit = latest_complete(folder) if (folder / "training_states").is_dir() else None
    total = options.train.total_iter
    changed = options_changed_since(folder, options) if unit is not None else []
    if unit is not None and may_continue and not changed:
        done = unit.iteration >= total
        print(f"   {label}: {folder} {'is trained' if done else 'continues'} ({unit.iteration} of {total} "
              f"iterations)")
        return "auto", done
    if folder.is_dir() and any(folder.iterdir()):
        why = (f"options differ: {'; '.join(changed)}" if changed else
               "stage 1 is trained first, so it would not be on that stage 1" if unit else "no complete checkpoint")
        print(f"   {label}: {folder} holds an earlier run ({why}); the training start moves it to "
              f"{folder.name}_archived_<time>")
    return "none", False


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters1", type=positive_int, default=None, metavar="N",
                    help="stage-1 iterations (default: the option file's)")
    ap.add_argument("--iters2", type=positive_int, default=None, metavar="N",
                    help="stage-2 iterations (default: the option file's)")
    return ap.parse_args(argv)


def side_by_side(pairs: Dict[str, Dict[str, Path]], out: Path) -> Path:
    """blurry | restored | sharp for each test image, stacked vertically, with labels."""
    rows = []
    for key, files in sorted(pairs.items()):
        imgs = [cv2.imread(str(files[k]), cv2.IMREAD_COLOR) for k in ("input", "output", "target")]
        h = min(i.shape[0] for i in imgs)
        imgs = [i[:h] for i in imgs]
        for img, label in zip(imgs, ("blurry input", "hidiff output", "sharp ground truth")):
            cv2.putText(img, label, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(img, label, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(np.concatenate(imgs, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    ok, buf = cv2.imencode(".png", np.concatenate(rows, axis=0))
    atomic_write_bytes(out, buf.tobytes())
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    root = Path("datasets/demo")
    processes = 2 if (os.cpu_count() or 1) >= 2 else 1
    stages = []
    try:
        for stage, iters in (("1", args.iters1), ("2", args.iters2)):
            overrides = stage_overrides(iters)
            trained = overrides + (ONE_PROCESS[1::2] if processes <= 1 else [])   # what the training loads
            stages.append((stage, overrides, load_options(f"options/demo_stage{stage}.yml", trained,
                                                          is_train=True)))
        print("== run folders", flush=True)
        resume1, finished1 = plan_stage(stages[0][2], "stage 1", may_continue=True)
        resume2, finished2 = plan_stage(stages[1][2], "stage 2", may_continue=finished1)
    except HidiffError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("== 1/4 data: synthetic camera-shake blur on scikit-image photos", flush=True)
    copy_photos(TRAIN_PHOTOS, root / "train_sharp", max_side=TRAIN_MAX_SIDE)
    copy_photos(TEST_PHOTOS, root / "test_sharp")
    n = freeze_test_pairs(root / "test_sharp", root / "test", kernel_size=KERNEL_SIZE, seed=1234)
    print(f"   train photos: {len(TRAIN_PHOTOS)} (fresh blur every sample); frozen test pairs: {n}")
    for (stage, overrides, _), resume, finished in zip(stages, (resume1, resume2), (finished1, finished2)):
        if finished:    # kept as it is: no training processes to start
            print(f"== {int(stage) + 1}/4 training stage {stage}: already trained, nothing to run", flush=True)
            continue
        print(f"== {int(stage) + 1}/4 training stage {stage} ({processes} data-parallel process"
              f"{'es' if processes > 1 else ''})", flush=True)
        cmd = ["scripts/train.py", "-opt", f"options/demo_stage{stage}.yml", "--resume", resume]
        for item in overrides:
            cmd += ["-o", item]
        run_script(training_command(cmd, processes))
    print("== 4/4 test on held-out photos", flush=True)
    options = load_options("options/demo_test.yml", is_train=False)
    run_test(options, experiment="demo_stage2")
    results = Path(options.path.results_root) / options.name / "demo_stage2"  # results/<name>/<weights label>
    cols = get_protocol("gopro").headline
    rows = list(csv.DictReader(open(results / "demo_test" / "metrics.csv")))
    print()
    print(f"| image | blurry {cols[0]} | hidiff {cols[0]} | gain dB | blurry {cols[1]} | hidiff {cols[1]} |")
    print("|---|---:|---:|---:|---:|---:|")
    gains = []
    for r in rows:
        gi, go = float(r[f"input_{cols[0]}"]), float(r[cols[0]])
        gains.append(go - gi)
        print(f"| {r['name']} | {gi:.2f} | {go:.2f} | {go - gi:+.2f} | {float(r[f'input_{cols[1]}']):.4f} | "
              f"{float(r[cols[1]]):.4f} |")
    mi = np.mean([float(r[f"input_{cols[0]}"]) for r in rows])
    mo = np.mean([float(r[cols[0]]) for r in rows])
    si = np.mean([float(r[f"input_{cols[1]}"]) for r in rows])
    so = np.mean([float(r[cols[1]]) for r in rows])
    print(f"| **mean** | {mi:.2f} | {mo:.2f} | {mo - mi:+.2f} | {si:.4f} | {so:.4f} |")
    vis = results / "visualization" / "demo_test"
    pairs = {r["name"]: {"input": root / "test" / "input" / f"{r['name']}.png", "output": vis / f"{r['name']}.png",
                          "target": root / "test" / "target" / f"{r['name']}.png"} for r in rows}
    pic = side_by_side(pairs, Path(options.path.results_root) / options.name / "demo_comparison.png")
    print(f"\nmetrics: {cols[0]} / {cols[1]} as the GoPro protocol computes them (MATLAB-style RGB SSIM)")
    print(f"comparison picture: {pic}")
    print(f"per-image report: {results / 'demo_test'}")
    print(f"demo finished in {time.time() - t0:.0f} s; PSNR gain over the blurry input: {mo - mi:+.2f} dB")
    return 0
