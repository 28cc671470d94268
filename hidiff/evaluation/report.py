"""Machine-readable and human-readable evaluation reports.

For one test set, ``write_set_report(out_dir, rows, meta)`` writes (atomically)

- ``metrics.csv``: one row per image, one column per metric variant
  (``psnr_uint8_rgb``, ``ssim_matlab3d``, ``psnr_realblur_masked``, ``ecc_converged``...);
- ``summary.json``: means, flagged images (e.g. ECC failures) and the run metadata;
- ``summary.md``: the same as a markdown table.

With ``scenes`` (image name -> scene, e.g. DPDD's indoor/outdoor), ``summary.json`` also holds the
means per scene (``scenes``) and every table shows them beside the combined mean.  ``extra`` adds
top-level fields: ``complete`` / ``expected_images`` / ``found_images`` (a known test set with
another image count) and ``scenes_missing`` (why no per-scene means were computed) are shown in
the tables too.

``meta`` is free-form; the useful keys are ``set``, ``protocol``, ``model``, ``seed``,
``inference`` (padding, tiling, self-ensemble, ...) and ``weights`` (see
``weights_info``, which records each weight file's sha256).  In JSON, non-finite
floats are written as the strings "inf", "-inf", "nan" so the file stays strict JSON.

``write_summary_table`` writes one table over several sets (or methods), and
``write_comparison_grid`` (from ``comparison_grid``) a qualitative figure.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hidiff.data.image_io import PathLike
from hidiff.errors import DataError
from hidiff.evaluation.comparison_grid import write_comparison_grid
from hidiff.evaluation.folders import evaluate_folders  # re-exported: score a folder, then report it
from hidiff.evaluation.summary import metric_columns, scene_means, summarize
from hidiff.utils.atomic import atomic_write_text
from hidiff.utils.hashing import sha256_file

__all__ = ["weights_info", "build_summary", "write_set_report", "write_summary_table", "write_comparison_grid",
           "evaluate_folders", "json_safe", "set_summary_markdown", "summary_table_markdown"]


def weights_info(paths: Mapping[str, PathLike]) -> dict[str, dict[str, str]]:
    """``{name: {"path", "sha256"}}`` for the weight files of a run (for ``meta["weights"]``)."""
    return {name: {"path": str(p), "sha256": sha256_file(p)} for name, p in paths.items()}


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(allow_nan=False)`` accepts."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [json_safe(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_safe(dataclasses.asdict(obj))
    return str(obj)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return f"{v:.4f}" if math.isfinite(v) else str(v)
    return "–" if v is None else str(v)


def _csv_value(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return "" if v is None else str(v)


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([_csv_value(v) for v in r])
    return buf.getvalue()


def _flatten(meta: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in meta.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _flag_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    for col, f in summary.get("flags", {}).items():
        if f["n_false"]:
            names = ", ".join(f["false"][:20]) + (" ..." if len(f["false"]) > 20 else "")
            extra = " (scored unaligned)" if col == "ecc_converged" else ""
            lines.append(f"- `{col}` is false for {f['n_false']} of {f['n_true'] + f['n_false']} "
                         f"image(s){extra}: {names}")
        else:
            lines.append(f"- `{col}` is true for all {f['n_true']} image(s)")
    return lines


def _note_lines(summary: Mapping[str, Any], label: str = "") -> list[str]:
    """Markdown lines for an incomplete known test set and for missing per-scene means."""
    lines = []
    if summary.get("complete") is False:
        lines.append(f"- {label}**incomplete**: {summary.get('n_images')} of the {summary.get('expected_images')} "
                     f"images of this test set scored ({summary.get('found_images')} found)")
    if summary.get("scenes_missing"):
        lines.append(f"- {label}no per-scene means (combined mean only): {summary['scenes_missing']}")
    return lines


def set_summary_markdown(summary: Mapping[str, Any]) -> str:
    """Markdown for one set: metric means, flags and the run metadata."""
    head = [f"# Evaluation: {summary.get('set', '?')}", ""]
    if summary.get("protocol"):
        desc = summary.get("protocol_description")
        head.append(f"- protocol: `{summary['protocol']}`" + (f" ({desc})" if desc else ""))
    head.append(f"- images: {summary.get('n_images', 0)}")
    head += _note_lines(summary)
    scenes = summary.get("scenes") or {}
    header = ["metric (variant)", "mean"] + [f"{sc} ({v['n_images']})" for sc, v in scenes.items()]
    body = [[k, _fmt(v)] + [_fmt(sv["means"].get(k)) for sv in scenes.values()]
            for k, v in summary.get("means", {}).items()]
    blocks = ["\n".join(head), _md_table(header, body, [False] + [True] * (len(header) - 1)).rstrip()]
    flags = _flag_lines(summary)
    if flags:
        blocks.append("\n".join(flags))
    meta = summary.get("meta") or {}
    if meta:
        blocks.append("## Run metadata\n\n" + _md_table(["key", "value"], [[k, _fmt(v)] for k, v in _flatten(meta)],
                                                          [False, False]).rstrip())
    return "\n\n".join(blocks) + "\n"


def build_summary(rows: Sequence[Mapping[str, Any]], scenes: Mapping[str, str] | None = None,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``summarize(rows)`` with the per-scene means of ``scenes`` and the fields of ``extra``."""
    return {**summarize(rows), **({"scenes": scene_means(rows, scenes)} if scenes else {}), **(extra or {})}


def write_set_report(out_dir: PathLike, rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None,
                     scenes: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Write ``metrics.csv``, ``summary.json`` and ``summary.md`` into ``out_dir``; return the summary."""
    if not rows:
        raise DataError(f"write_set_report: no per-image rows to write into '{out_dir}'")
    meta = dict(meta or {})
    out = Path(out_dir)
    cols = metric_columns(rows)
    summary: dict[str, Any] = {
        "set": meta.get("set", out.name),
        "protocol": meta.get("protocol"),
        **({"protocol_description": meta["protocol_description"]} if "protocol_description" in meta else {}),
        **build_summary(rows, scenes, extra),
        "columns": cols,
        "meta": json_safe(meta),
        "files": ["metrics.csv", "summary.json", "summary.md"],
    }
    atomic_write_text(out / "metrics.csv", _csv_text(["name"] + cols,
                                                     [[r.get("name")] + [r.get(c) for c in cols] for r in rows]))
    atomic_write_text(out / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "summary.md", set_summary_markdown(summary))
    return summary


def _table(summaries: Sequence[Mapping[str, Any]], row_key: str) -> tuple[list[str], list[list[Any]]]:
    metric_cols: list[str] = []
    flag_cols: list[str] = []
    for s in summaries:
        metric_cols += [c for c in s.get("means", {}) if c not in metric_cols]
        flag_cols += [c for c in s.get("flags", {}) if c not in flag_cols]
    nets: list[str] = []
    for s in summaries:
        nets += [n for n in _weights(s) if n not in nets]
    complete = any("complete" in s for s in summaries)
    header = ([row_key, "protocol", "n_images"] + (["complete"] if complete else []) + metric_cols
              + [f"{c}_false" for c in flag_cols] + [f"weights_{n}_{k}" for n in nets for k in ("path", "sha256")])
    body = []
    for s in summaries:
        w = _weights(s)
        weights = [w.get(n, {}).get(k) for n in nets for k in ("path", "sha256")]
        body.append([s.get(row_key), s.get("protocol"), s.get("n_images")]
                    + ([s.get("complete")] if complete else [])
                    + [s.get("means", {}).get(c) for c in metric_cols]
                    + [s["flags"][c]["n_false"] if c in s.get("flags", {}) else None for c in flag_cols]
                    + weights)
        for scene, part in (s.get("scenes") or {}).items():  # e.g. DPDD's indoor/outdoor, below the combined row
            body.append([f"{s.get(row_key)} ({scene})", s.get("protocol"), part.get("n_images")]
                        + ([None] if complete else [])
                        + [part.get("means", {}).get(c) for c in metric_cols]
                        + [None] * len(flag_cols) + weights)
    return header, body


def _weights(summary: Mapping[str, Any]) -> Mapping[str, Mapping[str, str]]:
    """``meta.weights`` of a summary: ``{network: {"path", "sha256"}}`` (empty when not recorded)."""
    w = (summary.get("meta") or {}).get("weights")
    return w if isinstance(w, Mapping) else {}


def summary_table_markdown(summaries: Sequence[Mapping[str, Any]], row_key: str = "set") -> str:
    """One markdown table: a row per summary (then one per scene it has), a column per metric variant (means),
    then the weights used; notes on incomplete sets and missing per-scene means follow the table."""
    header, body = _table(summaries, row_key)
    right = [False, False] + [True] * (len(header) - 2)
    notes = [line for s in summaries for line in _note_lines(s, f"{s.get(row_key)}: ")]
    return _md_table(header, [[_fmt(v) for v in row] for row in body], right) + (
        "\n" + "\n".join(notes) + "\n" if notes else "")


def write_summary_table(path: PathLike, summaries: Sequence[Mapping[str, Any]], row_key: str = "set") -> None:
    """Write a combined table over several summaries; format from the suffix (.md, .csv, .json).

    ``row_key`` names the summary field that labels each row (``set`` or ``method``).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        header, body = _table(summaries, row_key)
        text = _csv_text(header, body)
    elif suffix == ".json":
        text = json.dumps(json_safe(list(summaries)), indent=2, allow_nan=False) + "\n"
    elif suffix in (".md", ".markdown", ".txt", ""):
        text = summary_table_markdown(summaries, row_key)
    else:
        raise DataError(f"write_summary_table: unknown table format '{suffix}' for '{p}'; use .md, .csv or .json")
    atomic_write_text(p, text)
