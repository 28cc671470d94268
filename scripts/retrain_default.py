"""Retrain the default model, resumably: ``python scripts/retrain_default.py --photos ../shared/photos/train``
(see hidiff/cli/retrain_default.py)."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hidiff.cli.retrain_default import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
