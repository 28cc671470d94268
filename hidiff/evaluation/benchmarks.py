"""The public deblurring test sets: which protocol scores them and how many images they have.

Counts: GoPro 1111, HIDE 2025, RealBlur-J/R 980 each (docs/protocols.md), DPDD 76
(docs/protocols.md).  A name is matched after lower-casing and dropping
everything but letters and digits, so ``RealBlur_J``, ``realblur-j`` and
``RealBlurJ`` are the same set; any other name is unknown (protocol ``basic``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class BenchmarkSet:
    """A known test set: display name, default protocol, expected number of images."""

    name: str
    protocol: str
    expected_count: int


_SETS = (
    BenchmarkSet("GoPro", "gopro", 1111),
    BenchmarkSet("HIDE", "gopro", 2025),
    BenchmarkSet("RealBlur_J", "realblur", 980),
    BenchmarkSet("RealBlur_R", "realblur", 980),
    BenchmarkSet("DPDD", "dpdd", 76),
)


def normalize_set_name(name: str) -> str:
    """Lower-case ``name`` and keep only letters and digits."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


KNOWN_SETS = {normalize_set_name(s.name): s for s in _SETS}


def lookup_set(name: str | None) -> BenchmarkSet | None:
    """The known test set called ``name``, or None."""
    if not name:
        return None
    return KNOWN_SETS.get(normalize_set_name(name))


def resembled_set(name: str | None) -> BenchmarkSet | None:
    """The known test set whose name ``name`` holds without being it (``GoPro_test``, ``RealBlur-J test``), or
    None: such a set gets the ``basic`` protocol, not the paper's, unless its protocol is named."""
    if not name or lookup_set(name) is not None:
        return None
    key = normalize_set_name(name)
    found = [s for k, s in KNOWN_SETS.items() if len(k) >= 4 and k in key]
    return max(found, key=lambda s: len(normalize_set_name(s.name))) if found else None
