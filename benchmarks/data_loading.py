#!/usr/bin/env python
"""Training-loader throughput: 256x256 crops from folders vs LMDB vs on-the-fly synthetic blur.

    python benchmarks/data_loading.py [--photos DIR] [--samples 240] [--workers 0 1 2] [--batch 4]

Builds its own temporary paired set from the photos (default: the photos that
ship inside scikit-image's wheel) by freezing synthetic camera-shake blur, writes
LMDB copies, then times ``build_dataloader`` over ``--samples`` training
samples for each backend and worker count.  Prints samples/s (the first batch,
which includes worker start-up, is timed separately), and first the cost of one
random camera-shake kernel (what the on-the-fly source pays per sample).
Nothing is kept.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage
import torch

from hidiff.data.blur_kernels import random_kernel
from hidiff.data.loader import build_dataloader
from hidiff.data.lmdb_io import write_lmdb
from hidiff.data.paired_dataset import PairedImageDataset
from hidiff.data.synthetic_dataset import SyntheticBlurDataset
from hidiff.data.synthetic_set import freeze_synthetic_set

BUNDLED = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
           "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png")


def time_loader(dataset, *, workers: int, batch: int, samples: int) -> tuple[float, float]:
    """(seconds to the first batch, samples/s over the remaining batches)."""
    ratio = -(-samples // len(dataset))
    loader = build_dataloader(dataset, phase="train", batch_size=batch, num_workers=workers, seed=0,
                              enlarge_ratio=ratio)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    n, t1 = 0, time.perf_counter()
    for b in it:
        n += b["lq"].shape[0]
        if n >= samples - batch:
            break
    return first, n / (time.perf_counter() - t1)


def time_kernels(size: int, count: int = 50) -> float:
    """Milliseconds to draw one random camera-shake kernel of ``size`` px (trajectory + PSF)."""
    random_kernel(size, np.random.default_rng(0))
    t0 = time.perf_counter()
    for s in range(count):
        random_kernel(size, np.random.default_rng(s))
    return (time.perf_counter() - t0) / count * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=Path, default=None, help="folder of sharp photos (default: scikit-image's)")
    p.add_argument("--samples", type=int, default=240)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--gt-size", type=int, default=256)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("random camera-shake kernel: " + ", ".join(f"{k} px {time_kernels(k):.2f} ms" for k in (11, 31, 63)))
    tmp = Path(tempfile.mkdtemp(prefix="hidiff-bench-"))
    try:
        photos = tmp / "photos"
        photos.mkdir()
        if args.photos is None:
            src = Path(skimage.__file__).parent / "data"
            for name in BUNDLED:
                shutil.copy(src / name, photos / name)
        else:
            for f in sorted(args.photos.iterdir()):
                if f.is_file():
                    shutil.copy(f, photos / f.name)
        pairs = tmp / "pairs"
        freeze_synthetic_set(photos, pairs, seed=0, log=lambda _m: None)
        for role in ("input", "target"):
            write_lmdb(pairs / role, pairs / f"{role}.lmdb")
        disk = PairedImageDataset(str(pairs / "input"), str(pairs / "target"), "train", gt_size=args.gt_size)
        lmdb = PairedImageDataset(str(pairs / "input.lmdb"), str(pairs / "target.lmdb"), "train",
                                  gt_size=args.gt_size, io_backend="lmdb")
        synth = SyntheticBlurDataset(str(photos), "train", gt_size=args.gt_size)
        size_mb = sum(f.stat().st_size for f in (pairs / "input").iterdir()) / 2 ** 20
        print(f"{len(disk)} pairs from {len(synth)} photos ({size_mb:.1f} MiB of blurry PNGs); "
              f"{args.samples} training samples of {args.gt_size}x{args.gt_size}, batch {args.batch}, "
              f"{os.cpu_count()} CPU cores")
        print(f"{'source':<26}{'workers':>8}{'first batch s':>15}{'samples/s':>12}")
        for label, ds in (("folder (PNG)", disk), ("LMDB (PNG in LMDB)", lmdb), ("synthetic blur on the fly", synth)):
            for w in args.workers:
                first, rate = time_loader(ds, workers=w, batch=args.batch, samples=args.samples)
                print(f"{label:<26}{w:>8}{first:>15.2f}{rate:>12.1f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
