"""``hidiff-prepare`` (also ``scripts/prepare_data.py``): check and lay out gopro | hide | realblur | dpdd."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from hidiff.cli.arguments import positive_int
from hidiff.data.prepare.checks import PrepareReport
from hidiff.data.prepare.dpdd import prepare_dpdd
from hidiff.data.prepare.gopro import prepare_gopro
from hidiff.data.prepare.hide import prepare_hide
from hidiff.data.prepare.placing import PrepareOptions
from hidiff.data.prepare.realblur import prepare_realblur
from hidiff.errors import HidiffError
from hidiff.utils.optional import require

BENCHMARKS: dict[str, Callable[[Path, PrepareOptions], PrepareReport]] = {
    "gopro": prepare_gopro,
    "hide": prepare_hide,
    "realblur": prepare_realblur,
    "dpdd": prepare_dpdd,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hidiff-prepare",
        description="Check a downloaded deblurring benchmark and write the folder layout the option files "
                    "expect (see datasets/README.md).  All or nothing: outputs are built in --dst/.hidiff-prepare-"
                    "<pid>/ and moved into place only when everything succeeded.")
    p.add_argument("benchmark", choices=sorted(BENCHMARKS))
    p.add_argument("--src", required=True, type=Path, help="the extracted archive (or its parent folder)")
    p.add_argument("--dst", type=Path, default=Path("datasets"), help="output root (default: datasets/)")
    p.add_argument("--lmdb", action="store_true", help="also write <folder>.lmdb stores (BasicSR format)")
    p.add_argument("--val-scenes", "--val-from-train", dest="val_scenes", type=int, default=2, metavar="N",
                   help="hold out the last N training scenes as validation (GoPro, RealBlur; default 2; "
                        "0 = none)")
    p.add_argument("--official-test-val", action="store_true",
                   help="validate on the test set as the official recipe does (leaks the benchmark)")
    p.add_argument("--strict", action="store_true",
                   help="stop on any problem (count differing from the official, unpaired or corrupt file)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip decoding every image (faster, less safe)")
    place = p.add_mutually_exclusive_group()
    place.add_argument("--copy", dest="mode", action="store_const", const="copy",
                       help="copy files instead of hard-linking them")
    place.add_argument("--symlink", dest="mode", action="store_const", const="symlink",
                       help="symlink files instead of hard-linking them")
    p.set_defaults(mode="link")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing non-empty output folders (only once the whole preparation succeeded)")
    p.add_argument("--workers", type=positive_int, default=max(1, os.cpu_count() or 1), help="threads for decoding/cropping")
    p.add_argument("--crop-size", type=positive_int, default=512, help="GoPro training crop size (default 512)")
    p.add_argument("--crop-stride", type=positive_int, default=256, help="GoPro training crop stride (default 256)")
    p.add_argument("--val-crop", type=positive_int, default=256, help="GoPro validation centre-crop size (default 256)")
    p.add_argument("--gopro-blur", choices=("blur", "blur_gamma"), default="blur",
                   help="which GOPRO_Large input folder to use (default: blur, as Restormer/HI-Diff)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.lmdb:
            require("lmdb", "lmdb", "--lmdb")  # before anything is written
        opts = PrepareOptions(dst=args.dst, mode=args.mode, lmdb=args.lmdb, strict=args.strict, verify=args.verify,
                              val_scenes=args.val_scenes, official_test_val=args.official_test_val,
                              overwrite=args.overwrite, workers=args.workers, crop_size=args.crop_size,
                              crop_stride=args.crop_stride, val_crop=args.val_crop, gopro_blur=args.gopro_blur)
        report = BENCHMARKS[args.benchmark](args.src, opts)
    except (HidiffError, OSError) as exc:  # OSError: a disk full or a permission refused; nothing was moved
        print(f"error: {exc}", file=sys.stderr)
        return 1
    n_warn = len(report.warnings)
    print(f"{report.benchmark}: done, {n_warn} warning(s); report in {args.dst / 'reports'}"
          + ("  <-- read the warnings above" if n_warn else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
