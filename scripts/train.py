"""Train a model: ``python scripts/train.py -opt options/X.yml`` (see hidiff/engine/train_cli.py)."""
import sys

from hidiff.engine.train_cli import main

if __name__ == "__main__":
    sys.exit(main())
