"""Profile a model: ``python scripts/profile.py -opt options/test_gopro.yml --size 256x256 [--device cuda]``.

Prints a table (parameters, GMAC/GFLOP, latency, peak memory per network and for the
whole inference pipeline) followed by the same result as one JSON line.
"""
import os
import sys

# This file is named like the standard library's ``profile`` module, which torch
# imports (through cProfile); keep this folder off the import path so that the
# standard module is found.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from hidiff.profiling.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
