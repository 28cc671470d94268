#!/usr/bin/env python
"""Freeze a synthetic camera-shake benchmark from a folder of sharp photos.

    python scripts/make_synthetic.py --sharp PHOTOS --out datasets/synthetic/test [--seed 0] [--crop 256]
        [--kernel-size 31] [--noise-min 0] [--noise-max 0.02] [--overwrite]

Writes out/{input,target}/<key>.png, out/kernels/<key>.{npy,png} and
out/manifest.json (seeds, parameters, sha256 of every file).  The same
arguments give the same bytes; the pairs equal SyntheticBlurDataset's val/test
items with the same settings.  Without --crop each pair is the whole photo
minus a kernel_size//2 border.
"""
import argparse
import sys

from hidiff.data.synthetic_set import freeze_synthetic_set
from hidiff.errors import HidiffError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sharp", required=True, help="folder of sharp photos")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop", type=int, default=None, help="centre crop size of every pair (default: whole photo)")
    p.add_argument("--kernel-size", type=int, default=31)
    p.add_argument("--noise-min", type=float, default=0.0, help="lowest noise sigma on [0,1] images")
    p.add_argument("--noise-max", type=float, default=0.02, help="highest noise sigma on [0,1] images")
    p.add_argument("--overwrite", action="store_true", help="replace an existing set in --out")
    args = p.parse_args(argv)
    try:
        manifest = freeze_synthetic_set(args.sharp, args.out, seed=args.seed, crop=args.crop,
                                        kernel_size=args.kernel_size, noise_sigma=(args.noise_min, args.noise_max),
                                        overwrite=args.overwrite)
    except (HidiffError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(manifest['items'])} pairs to {args.out} (manifest.json lists the sha256 of every file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
