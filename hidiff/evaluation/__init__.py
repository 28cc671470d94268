"""Evaluation: protocols (gopro, realblur, basic, dpdd) over image pairs, folder scoring, reports.

Main entry points::

    from hidiff.evaluation import get_protocol, evaluate_folders, write_set_report
    rows, summary = evaluate_folders("results/GoPro", "datasets/test/GoPro/target", "gopro", set_name="GoPro")
    write_set_report("results/report/GoPro", rows, {"set": "GoPro", "protocol": "gopro", "seed": 100})
"""
from __future__ import annotations

from hidiff.evaluation.folders import evaluate_folders
from hidiff.evaluation.protocols import Protocol, default_protocol_for, get_protocol
from hidiff.evaluation.report import weights_info, write_comparison_grid, write_set_report, write_summary_table

__all__ = ["Protocol", "default_protocol_for", "evaluate_folders", "get_protocol", "weights_info",
           "write_comparison_grid", "write_set_report", "write_summary_table"]
