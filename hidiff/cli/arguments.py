"""Argument types shared by the command-line tools: numbers out of range are usage errors (exit 2)."""
from __future__ import annotations

import argparse
from pathlib import Path

from hidiff.errors import ConfigError


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (a count of steps, tiles, images, pixels)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (>= 1), got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a seed, an overlap in pixels)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def add_prior_seed_arguments(ap: argparse.ArgumentParser, scores: bool = True) -> None:
    """--prior-seeds K, --prior-image mean|first, --std-map (see hidiff/runners/prior_seeds.py); ``scores``: the
    command computes metrics (hidiff-test), which then become means over the K restorations."""
    from hidiff.runners.prior_seeds import PRIOR_IMAGES  # deferred: the command imports without torch
    ap.add_argument("--prior-seeds", type=positive_int, default=1, metavar="K",
                    help="restore each image from K initial noises of the prior (default 1)"
                         + ("; metrics become mean and <metric>_std over them" if scores else ""))
    ap.add_argument("--prior-image", choices=PRIOR_IMAGES, default="mean",
                    help="with K > 1, write the per-pixel mean of the K restorations or the first seed's")
    ap.add_argument("--std-map", action="store_true",
                    help="also write the per-pixel standard deviation over the K restorations (16-bit gray PNG)")


def check_output_folder(out: Path, flag: str) -> None:
    """``out`` is a folder or can be created as one (ConfigError naming ``flag``): found before any work."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} '{out}' exists and is not a folder")
    ancestor = out.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{flag} '{out}': cannot create the folder ('{ancestor}' is not a folder)")
