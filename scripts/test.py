"""Test a model on every test set of an option file (``hidiff-test``; see ``--help``)."""
import sys

from hidiff.cli.test import main

if __name__ == "__main__":
    sys.exit(main())
