"""Measuring models: parameters, MACs/FLOPs, synchronised latency and peak memory.

``hidiff-profile`` (hidiff/cli/profile.py) is the front end; ``benchmarks/speed.py`` reuses the same
cases and the per-case subprocess measurement.  ``train_step``/``train_speed``
time the trainer's optimisation step for ``benchmarks/train_speed.py``;
``checkrun``/``gpu_checks`` are the checks of ``benchmarks/gpu_check.py``.
"""
from hidiff.profiling.cases import CASE_ORDER, Case, build_cases, parse_size
from hidiff.profiling.counting import count_flops, count_parameters, reference_formulation
from hidiff.profiling.machine import describe_machine, load_average
from hidiff.profiling.memory import PeakMemory
from hidiff.profiling.profiler import ProfileSpec, count_cases, measure_case, measure_in_subprocess, profile
from hidiff.profiling.timing import Timing, time_call

__all__ = ["CASE_ORDER", "Case", "build_cases", "parse_size", "count_flops", "count_parameters",
           "reference_formulation", "describe_machine", "load_average", "PeakMemory", "ProfileSpec", "count_cases",
           "measure_case", "measure_in_subprocess", "profile", "Timing", "time_call"]
