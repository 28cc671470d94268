"""Score several result folders (methods) against one ground truth and tabulate them.

Every folder is paired with the ground truth and its image sizes and channels are checked
(from the headers) before any image is scored, so a missing, mis-sized or gray-for-colour
file in the last folder stops the comparison at once.  A report folder that is, holds or
lies inside a result or ground-truth folder is refused (``check_report_folder``), so reports
never land among the images and archiving an old comparison never moves an input.  Under the
dpdd protocol the means per scene (indoor/outdoor) are added when the label files are found
beside the ground truth (docs/protocols.md).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from hidiff.data.dual_pixel_dataset import load_scene_labels
from hidiff.data.image_io import PathLike
from hidiff.errors import ConfigError, DataError
from hidiff.evaluation.benchmarks import lookup_set
from hidiff.evaluation.folders import evaluate_folders, guess_set_name
from hidiff.evaluation.pairing import check_channels, check_sizes, pair_by_name
from hidiff.evaluation.protocols import Protocol, default_protocol_for, get_protocol
from hidiff.evaluation.report import summary_table_markdown, write_set_report, write_summary_table
from hidiff.evaluation.summary import scene_means
from hidiff.utils.archive import archive_previous

logger = logging.getLogger(__name__)


@dataclass
class MethodResult:
    """Per-image rows and summary of one result folder."""

    label: str
    pred_dir: Path
    rows: list[dict]
    summary: dict
    scenes: Optional[dict] = None  # image name -> scene (dpdd: indoor/outdoor)
    extra: dict = field(default_factory=dict)  # top-level summary fields (completeness, scenes_missing)


def default_labels(pred_dirs: Sequence[PathLike]) -> list[str]:
    """Folder names as labels; if two folders share a name, their full paths."""
    names = [Path(p).name or str(p) for p in pred_dirs]
    return [str(p) if names.count(n) > 1 else n for n, p in zip(names, pred_dirs)]


def compare_folders(pred_dirs: Sequence[PathLike], gt_dir: PathLike, protocol: str | Protocol | None = None,
                    labels: Sequence[str] | None = None, set_name: str | None = None, check_count: bool = True,
                    workers: int = 1) -> list[MethodResult]:
    """Evaluate every folder in ``pred_dirs`` with the same protocol and ground truth."""
    if not pred_dirs:
        raise ConfigError("compare_folders: give at least one result folder")
    labels = list(labels) if labels else default_labels(pred_dirs)
    if len(labels) != len(pred_dirs):
        raise ConfigError(f"{len(labels)} label(s) given for {len(pred_dirs)} result folder(s)")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"labels must be unique, got {labels}")
    proto = get_protocol(protocol if protocol is not None else default_protocol_for(set_name))
    side, why = proto.min_side
    names: list[str] = []
    for pred in pred_dirs:  # every folder, before any image is scored
        pairs = pair_by_name(pred, gt_dir, set_name=set_name, check_count=check_count)
        check_sizes(pairs, side, f"the {proto.name} protocol ({why})")
        check_channels(pairs)
        names = [p.name for p in pairs]
    extra: dict[str, Any] = {}
    known = lookup_set(set_name)
    if known is not None:
        extra.update(complete=len(names) == known.expected_count, expected_images=known.expected_count,
                     found_images=len(names))
    scenes = None
    if proto.name == "dpdd":
        scenes, missing = dpdd_scene_labels(gt_dir, names, set_name or guess_set_name(gt_dir))
        if missing:
            extra["scenes_missing"] = missing
    results = []
    for label, pred in zip(labels, pred_dirs):
        rows, summary = evaluate_folders(pred, gt_dir, proto, set_name=set_name, check_count=check_count,
                                         workers=workers)
        if scenes:
            summary["scenes"] = scene_means(rows, scenes)
        summary.update(extra)
        summary["method"] = label
        results.append(MethodResult(label, Path(pred), rows, summary, scenes, dict(extra)))
    return results


def dpdd_scene_labels(gt_dir: PathLike, names: Sequence[str], set_name: str
                      ) -> tuple[Optional[dict[str, str]], Optional[str]]:
    """``(image -> 'indoor'|'outdoor', None)`` from the label files in ``gt_dir``, its parent (the split folder)
    or grandparent (the DPDD root), as ``DualPixelDataset`` finds them; ``(None, why not)`` when they cannot be
    read (the comparison then gives the combined means only, and says so)."""
    gt = Path(gt_dir)
    try:
        return load_scene_labels([gt, gt.parent, gt.parent.parent], list(names), set_name), None
    except DataError as exc:
        logger.warning("no indoor/outdoor means, the combined mean only: %s", exc)
        return None, str(exc)


def comparison_markdown(results: Sequence[MethodResult]) -> str:
    """A markdown table with one row per method (means of each metric variant)."""
    return summary_table_markdown([r.summary for r in results], row_key="method")


def _safe_dirname(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "method"


def _identity(results: Sequence[MethodResult]) -> list:
    return sorted((r.label, str(r.summary.get("set")), str(r.summary.get("protocol"))) for r in results)


def _comparison_identity(out: Path):
    """(method, set, protocol) of the comparison written in ``out`` before, or None when there is none."""
    try:
        old = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
        return sorted((str(s["method"]), str(s.get("set")), str(s.get("protocol"))) for s in old)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_report_folder(out_dir: PathLike, pred_dirs: Sequence[PathLike], gt_dir: PathLike | None,
                        flags: tuple[str, str, str] = ("--out", "--pred folder", "--gt folder")) -> None:
    """ConfigError naming both folders when ``out_dir`` is, holds or lies inside a result or ground-truth
    folder (symlinks resolved): reports would land among the images, and a later comparison of other methods
    would move that folder, images and all, aside.  ``flags``: how the three are named in the message."""
    out = Path(out_dir)
    real = out.resolve()
    inputs = [(flags[1], Path(p)) for p in pred_dirs] + ([(flags[2], Path(gt_dir))] if gt_dir is not None else [])
    for flag, folder in inputs:
        other = folder.resolve()
        if real == other:
            how = "is the same folder as"
        elif real.is_relative_to(other):
            how = "lies inside"
        elif other.is_relative_to(real):
            how = "contains"
        else:
            continue
        raise ConfigError(f"{flags[0]} '{out}' {how} {flag} '{folder}'; reports would be written among the images "
                          f"and a later comparison of other methods would move them to '{out.name}_archived_<time>': "
                          f"choose another {flags[0]}, outside every {flags[1]} and {flags[2]}")


def write_comparison(out_dir: PathLike, results: Sequence[MethodResult], meta: Mapping[str, Any] | None = None
                     ) -> list[dict]:
    """``out_dir/<method>/{metrics.csv,summary.json,summary.md}`` and ``out_dir/comparison.{md,csv,json}``.

    A previous comparison in ``out_dir`` of other methods, sets or protocols is moved to
    ``<out_dir>_archived_<time>`` first, so that no method folder of it is left beside the new table; an
    ``out_dir`` that is, holds or lies inside a compared folder is refused (``check_report_folder``)."""
    out = Path(out_dir)
    gts = {str(r.summary["gt_dir"]) for r in results if r.summary.get("gt_dir")}
    for gt in gts or [None]:
        check_report_folder(out, [r.pred_dir for r in results], gt,
                            ("report folder", "result folder", "ground-truth folder"))
    if _comparison_identity(out) not in (None, _identity(results)):
        archived = archive_previous(out)
        logger.warning("%s held a comparison of other methods or sets: moved to %s", out, archived)
    summaries = []
    used: set[str] = set()
    for r in results:
        sub = _safe_dirname(r.label)
        while sub in used:
            sub += "_"
        used.add(sub)
        run_meta = {k: r.summary[k] for k in ("set", "protocol", "protocol_description", "pred_dir", "gt_dir")
                    if k in r.summary}
        run_meta.update({"method": r.label, **(meta or {})})
        s = write_set_report(out / sub, r.rows, run_meta, scenes=r.scenes, extra=r.extra)
        s["method"] = r.label
        summaries.append(s)
    for suffix in (".md", ".csv", ".json"):
        write_summary_table(out / f"comparison{suffix}", summaries, row_key="method")
    return summaries
