"""Train, evaluate and compare the variants of a sweep file (see hidiff/sweep/cli.py).

    python scripts/sweep.py -opt options/stage2.yml --sweep benchmarks/sweeps/quality.yml --jobs 2
"""
import sys

from hidiff.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
