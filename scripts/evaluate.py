#!/usr/bin/env python
"""Score result folders against ground truth: ``hidiff-evaluate`` (hidiff/cli/evaluate.py) from a checkout.

    python scripts/evaluate.py --protocol gopro --pred DIR [--pred DIR2 ...] --gt DIR [--out DIR]
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hidiff.cli.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
