"""Checks run before a training or test run touches anything on disk.

A run that would fail on its inputs (missing folders, unpaired images, an unknown
registry name, a missing stage-1 run, ...) must fail here, with every problem
listed at once, before any folder is archived, created or written.  The option
file itself was validated when it was loaded; these checks need the filesystem
or several blocks at once.  Datasets are checked by constructing them: that
lists their folders and pairs the files (or reads an LMDB's meta_info.txt)
without decoding an image, so the rules are the datasets' own.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hidiff.data.build import build_dataset
from hidiff.engine.stage_link import resolve_pretrained, stage1_unfinished
from hidiff.engine.validation import build_metric_fns
from hidiff.errors import ConfigError, HidiffError

#: ``path.resume_state`` words that are not a file (see ``train.py --resume``)
RESUME_WORDS = ("auto", "none")


def check_training(options) -> None:
    """Raise ``ConfigError`` listing every problem that would stop ``options`` from training."""
    problems: list[str] = []
    if options.train is None:
        problems.append("no 'train' block; this is not a training file")
    problems += _output_root(options.path.experiments_root, "path.experiments_root", options.name)
    resume = options.path.resume_state
    if resume and resume not in RESUME_WORDS and not Path(resume).expanduser().is_file():
        problems.append(f"path.resume_state: no training state file at '{resume}'")
    problems += _datasets(options, ("train", "val"))
    problems += _weights(options)
    if not any(p.startswith("path.stage1") for p in problems):
        problems += [p for p in [stage1_unfinished(options)] if p]
    problems += _metrics(options, score=any(d.phase == "val" for d in options.datasets.values()))
    _raise(options, problems)


def check_testing(options) -> None:
    """Raise ``ConfigError`` listing every problem that would stop ``options`` from testing."""
    problems: list[str] = []
    if not any(d.phase in ("test", "val") for d in options.datasets.values()):
        problems.append("no test_<n> (or val) dataset block to run")
    problems += _output_root(options.path.results_root, "path.results_root", options.name)
    problems += _datasets(options, ("test", "val"))
    problems += _weights(options)
    problems += _metrics(options)
    for key, ds in sorted(options.datasets.items()):
        for net, f in (ds.weights or {}).items():
            if not Path(f).expanduser().is_file():
                problems.append(f"datasets.{key}.weights.{net}: file not found: {f}")
    _raise(options, problems)


def _output_root(root: str, key: str, name: str) -> list[str]:
    """``root`` must be a folder or creatable, and ``root/name`` must not be a file."""
    path = Path(root).expanduser()
    if path.exists():
        if not path.is_dir():
            return [f"{key}: '{root}' is a file, not a folder"]
        run = path / name
        if run.exists() and not run.is_dir():
            return [f"{key}: '{run}' (the folder of '{name}') is a file"]
        if not os.access(path, os.W_OK | os.X_OK):
            return [f"{key}: the folder '{root}' is not writable"]
        return []
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return [f"{key}: '{root}' cannot be created: '{parent}' is a file"]
    if not os.access(parent, os.W_OK | os.X_OK):
        return [f"{key}: '{root}' cannot be created: '{parent}' is not writable"]
    return []


def _datasets(options, phases: tuple) -> list[str]:
    """Build every dataset block of ``phases``; each failure is one problem."""
    problems = []
    for key, ds in sorted(options.datasets.items()):
        if ds.phase not in phases:
            continue
        try:
            build_dataset(ds, options.manual_seed)
        except (HidiffError, OSError, ValueError) as exc:
            problems.append(f"datasets.{key}: {exc}")
    return problems


def _weights(options) -> list[str]:
    """The stage-1 link and every ``path.pretrain_network_<x>`` resolve to files."""
    problems = [f"path.pretrain_network_{net}: file not found: {Path(f).expanduser()}"
                for net, f in sorted(options.path.pretrain.items()) if f and not Path(f).expanduser().is_file()]
    try:
        resolve_pretrained(options)
    except ConfigError as exc:  # it stops at its first problem, which may be one of those above
        if str(exc) not in problems:
            problems.append(str(exc))
    return problems


def _metrics(options, score: bool = True) -> list[str]:
    """Each ``val.metrics`` block builds (its options fit the metric's signature) and, with ``score`` (a set
    will be scored), scores one small pair.

    Scoring loads what a metric needs (LPIPS's backbone weights): missing weights used to stop a training
    at its first validation, after the run folder was written and before that iteration's checkpoint.
    """
    problems = []
    for name, metric in options.val.metrics.items():
        try:
            (fn,) = build_metric_fns({name: metric}).values()
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if not score:
            continue
        side = 64 + 2 * metric.crop_border
        a = np.full((side, side, 3), 100, np.uint8)
        try:
            fn(a, a + 20)
        except HidiffError as exc:
            problems.append(f"val.metrics.{name} ({metric.type}): {exc}")
    return problems


def _raise(options, problems: list[str]) -> None:
    if problems:
        src = getattr(options, "source", None) or "options"
        raise ConfigError(f"{src}: {len(problems)} problem(s) found before anything was written:\n  - "
                          + "\n  - ".join(problems))
