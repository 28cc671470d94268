"""Train a model: ``python scripts/train.py -opt options/X.yml`` (see hidiff/cli/train.py)."""
import sys

from hidiff.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
