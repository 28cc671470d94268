#!/usr/bin/env python
"""Prepare GoPro / HIDE / RealBlur / DPDD: ``hidiff-prepare`` (hidiff/cli/prepare.py) from a checkout.

    python scripts/prepare_data.py gopro --src /data/GOPRO_Large [--dst datasets/] [--lmdb]
    python scripts/prepare_data.py realblur --src /data/RealBlur --val-scenes 2
    python scripts/prepare_data.py hide --src /data/HIDE_dataset
    python scripts/prepare_data.py dpdd --src /data/dd_dp_dataset_png

See ``datasets/README.md`` for the layouts read and written.
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hidiff.cli.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
