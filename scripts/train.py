"""Train a model: ``python scripts/train.py -opt options/X.yml`` (see hidiff/engine/train_cli.py)."""
from hidiff.engine.distributed import exit_process
from hidiff.engine.train_cli import main

if __name__ == "__main__":
    exit_process(main())
