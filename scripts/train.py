"""Train a model: ``python scripts/train.py -opt options/X.yml`` (see hidiff/cli/train.py)."""
from hidiff.cli.train import main
from hidiff.engine.distributed import exit_process

if __name__ == "__main__":
    exit_process(main())
