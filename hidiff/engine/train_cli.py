"""Moved to :mod:`hidiff.cli.train` (kept so old imports keep working)."""
from hidiff.cli.train import build_parser, main  # noqa: F401
