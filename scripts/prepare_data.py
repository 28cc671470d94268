#!/usr/bin/env python
"""Prepare GoPro / HIDE / RealBlur / DPDD for training and testing.

    python scripts/prepare_data.py gopro --src /data/GOPRO_Large [--dst datasets/] [--lmdb]
    python scripts/prepare_data.py realblur --src /data/RealBlur --val-scenes 2
    python scripts/prepare_data.py hide --src /data/HIDE_dataset
    python scripts/prepare_data.py dpdd --src /data/dd_dp_dataset_png

See ``datasets/README.md`` for the layouts read and written.
"""
import sys

from hidiff.data.prepare.cli import main

if __name__ == "__main__":
    sys.exit(main())
