"""Validation split taken from whole *training* scenes, never from the test set.

HI-Diff validates GoPro on centre crops of the test images and RealBlur on
the test set itself (docs/quirks.md, quirk 23): model selection then peeks at the
benchmark.  Here the last ``n`` training scenes (in sorted order, so the choice
is reproducible and documented) are held out whole; frames of one scene are
near-duplicates, so holding out single frames would leak as well.
"""
from __future__ import annotations

from typing import Sequence

from hidiff.data.prepare.checks import Pair
from hidiff.errors import DataError


def split_by_scene(pairs: Sequence[Pair], n_val: int, benchmark: str) -> tuple[list[Pair], list[Pair], list[str]]:
    """``(train_pairs, val_pairs, val_scenes)`` holding out the last ``n_val`` scenes."""
    if n_val == 0:
        return list(pairs), [], []
    unknown = [p.key for p in pairs if not p.scene]
    if unknown:
        raise DataError(f"{benchmark}: cannot tell the scene of {len(unknown)} training image(s) (e.g. "
                        f"'{unknown[0]}'), so no scene-level validation split can be made; use the official "
                        f"archive layout or pass --val-scenes 0")
    scenes = sorted({p.scene for p in pairs})
    if n_val >= len(scenes):
        raise DataError(f"{benchmark}: --val-scenes {n_val} would hold out all {len(scenes)} training scenes")
    val_scenes = scenes[-n_val:]
    held = set(val_scenes)
    return [p for p in pairs if p.scene not in held], [p for p in pairs if p.scene in held], val_scenes
