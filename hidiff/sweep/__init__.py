"""Sweeps: variants of an option file trained over seeds, evaluated and compared honestly."""
from hidiff.sweep.report import write_report
from hidiff.sweep.runner import RunFailed, SweepRunner
from hidiff.sweep.spec import Run, Sweep, Variant, load_sweep
from hidiff.sweep.stats import Interval, analyse, paired_interval, seed_spread

__all__ = ["load_sweep", "Sweep", "Variant", "Run", "SweepRunner", "RunFailed", "write_report", "analyse",
           "paired_interval", "seed_spread", "Interval"]
