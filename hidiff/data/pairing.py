"""Pair input and target images by file stem, with errors that say what is wrong where.

BasicSR fails with "GT and LQ datasets have different number of images" and
does not say which dataset, phase or files; here the message names the
dataset, the phase and the first unmatched files on each side.
"""
from __future__ import annotations

from typing import Sequence

from hidiff.errors import ConfigError, DataError

SHOWN = 5


def _expected_lq(gt_key: str, filename_tmpl: str) -> str:
    try:
        return filename_tmpl.format(gt_key)
    except (IndexError, KeyError, ValueError) as exc:
        raise ConfigError(f"filename_tmpl {filename_tmpl!r} is not a format string with one '{{}}' "
                          f"field: {exc}") from None


def _show(names: Sequence[str]) -> str:
    head = ", ".join(names[:SHOWN])
    return head + (f", ... ({len(names) - SHOWN} more)" if len(names) > SHOWN else "")


def pair_keys(lq_keys: Sequence[str], gt_keys: Sequence[str], *, filename_tmpl: str = "{}",
              dataset: str = "dataset", phase: str = "?", lq_root: str = "",
              gt_root: str = "") -> list[tuple[str, str]]:
    """``[(lq_key, gt_key), ...]`` sorted by gt key; DataError if any file is unmatched.

    The input stem of target ``k`` must be ``filename_tmpl.format(k)``.
    """
    lq_set = set(lq_keys)
    pairs = [(_expected_lq(k, filename_tmpl), k) for k in sorted(gt_keys)]
    missing_lq = [f"{lq} (for target {gt})" if lq != gt else gt for lq, gt in pairs if lq not in lq_set]
    used = {lq for lq, _ in pairs}
    extra_lq = sorted(k for k in lq_set if k not in used)
    if not gt_keys and not lq_keys:
        raise DataError(f"dataset '{dataset}' (phase {phase}): no images found in "
                        f"'{lq_root}' (input) or '{gt_root}' (target)")
    if missing_lq or extra_lq:
        parts = [f"dataset '{dataset}' (phase {phase}): input and target images do not pair up "
                 f"({len(lq_keys)} input, {len(gt_keys)} target, filename_tmpl {filename_tmpl!r})"]
        if missing_lq:
            parts.append(f"{len(missing_lq)} target image(s) in '{gt_root}' have no input in '{lq_root}': "
                         f"{_show(missing_lq)}")
        if extra_lq:
            parts.append(f"{len(extra_lq)} input image(s) in '{lq_root}' have no target in '{gt_root}': "
                         f"{_show(extra_lq)}")
        raise DataError("; ".join(parts))
    return pairs
