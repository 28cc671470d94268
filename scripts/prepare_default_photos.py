#!/usr/bin/env python
"""Gather the default model's training photos into one folder (hidiff.runners.default_photos.py).

    python scripts/prepare_default_photos.py --photos ../shared/photos/train [--dst datasets/default/train_sharp]

The folder gets the permissively licensed scikit-image photos, the images of every
``--photos`` folder and an ATTRIBUTION.md keeping every source's attribution.
options/default_stage1.yml and default_stage2.yml read it as their ``sharp_root``.
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, action="append", default=[], help="a folder of sharp photos; repeatable")
    ap.add_argument("--dst", type=Path, default=REPO / "datasets" / "default" / "train_sharp", help="the folder filled")
    ap.add_argument("--no-skimage", action="store_true", help="leave out the scikit-image photos")
    args = ap.parse_args(argv)
    from hidiff.runners.default_photos import gather_photos
    from hidiff.errors import HidiffError
    try:
        gather_photos(args.dst, args.photos, skimage=not args.no_skimage)
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
