#!/usr/bin/env python
"""Score one or more result folders against ground truth with a named protocol.

    python scripts/evaluate.py --protocol gopro --pred DIR [--pred DIR2 ...] --gt DIR [--out DIR]

Prints a markdown table (one row per result folder); see --help and hidiff/evaluation/.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hidiff.evaluation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
