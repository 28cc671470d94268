"""Checks run before a training or test run touches anything on disk.

A run that would fail on its inputs (missing folders, unpaired images, an unknown
registry name, a missing stage-1 run, ...) must fail here, with every problem
listed at once, before any folder is archived, created or written.
"""
from __future__ import annotations

from hidiff.errors import ConfigError


def check_training(options) -> None:
    """Raise ``ConfigError`` listing every problem that would stop ``options`` from training."""
    problems: list[str] = []
    if options.train is None:
        problems.append("no 'train' block; this is not a training file")
    _raise(options, problems)


def check_testing(options) -> None:
    """Raise ``ConfigError`` listing every problem that would stop ``options`` from testing."""
    _raise(options, [])


def _raise(options, problems: list[str]) -> None:
    if problems:
        src = getattr(options, "source", None) or "options"
        raise ConfigError(f"{src}: {len(problems)} problem(s) found before anything was written:\n  - "
                          + "\n  - ".join(problems))
