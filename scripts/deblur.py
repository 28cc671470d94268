"""Deblur photos: ``python scripts/deblur.py INPUT... -o OUT --weights DIR`` (see ``--help``)."""
import sys

from hidiff.cli.deblur import main

if __name__ == "__main__":
    sys.exit(main())
