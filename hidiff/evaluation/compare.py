"""Score several result folders (methods) against one ground truth and tabulate them."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from hidiff.data.image_io import PathLike
from hidiff.errors import ConfigError
from hidiff.evaluation.folders import evaluate_folders
from hidiff.evaluation.protocols import Protocol
from hidiff.evaluation.report import summary_table_markdown, write_set_report, write_summary_table
from hidiff.utils.archive import archive_previous

logger = logging.getLogger(__name__)


@dataclass
class MethodResult:
    """Per-image rows and summary of one result folder."""

    label: str
    pred_dir: Path
    rows: list[dict]
    summary: dict


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
    results = []
    for label, pred in zip(labels, pred_dirs):
        rows, summary = evaluate_folders(pred, gt_dir, protocol, set_name=set_name, check_count=check_count,
                                         workers=workers)
        summary["method"] = label
        results.append(MethodResult(label, Path(pred), rows, summary))
    return results


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


def write_comparison(out_dir: PathLike, results: Sequence[MethodResult], meta: Mapping[str, Any] | None = None
                     ) -> list[dict]:
    """``out_dir/<method>/{metrics.csv,summary.json,summary.md}`` and ``out_dir/comparison.{md,csv,json}``.

    A previous comparison in ``out_dir`` of other methods, sets or protocols is moved to
    ``<out_dir>_archived_<time>`` first, so that no method folder of it is left beside the new table."""
    out = Path(out_dir)
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
        s = write_set_report(out / sub, r.rows, run_meta)
        s["method"] = r.label
        summaries.append(s)
    for suffix in (".md", ".csv", ".json"):
        write_summary_table(out / f"comparison{suffix}", summaries, row_key="method")
    return summaries
