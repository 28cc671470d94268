"""Resolve which weight file each network starts from (``path`` block + the stage-1 link).

A stage-2 option file names its stage-1 run (``path.stage1: <experiment name or
run folder>``) instead of hand-edited file paths (the official S2 files point into
a ``debug_`` folder, docs/quirks.md, quirk 19).  Resolution happens at start-up and fails with a
clear message when a file is missing, before any training starts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from hidiff.config import load_options
from hidiff.config.yaml_io import load_yaml
from hidiff.engine.checkpoint_store import latest_complete
from hidiff.errors import ConfigError

#: networks a stage-2 run takes from its stage-1 run
STAGE1_NETWORKS = ("g", "le")


@dataclass(frozen=True)
class PretrainSpec:
    path: Path
    strict: bool
    param_key: str


def find_model_files(models_dir: Path, nets, which="latest") -> Dict[str, Path]:
    """The files of ``nets`` in the checkpoint unit ``which`` ('latest', 'best' or an iteration) of a run.

    In a run folder that keeps checkpoint units (it has ``training_states`` or
    ``models/latest.json``) only one complete unit counts (see
    :func:`hidiff.engine.checkpoint_store.latest_complete`): a save killed between
    two network files never pairs one network of iteration N with another of N-1.
    A plain folder of weight files is read by name: ``net_<x>_latest.pth``, else
    the highest ``net_<x>_<iter>.pth``.
    """
    run = models_dir.parent
    if (run / "training_states").is_dir() or (models_dir / "latest.json").is_file():
        unit = latest_complete(run, which)
        return {} if unit is None else {n: unit.networks[n] for n in nets if n in unit.networks}
    out = {}
    for net in nets:
        if which != "latest":
            p = models_dir / f"net_{net}_{which}.pth"
        else:
            p = models_dir / f"net_{net}_latest.pth"
            if not p.is_file():
                pat = re.compile(rf"^net_{re.escape(net)}_(\d+)\.pth$")
                iters = sorted((int(m.group(1)), f) for f in models_dir.glob(f"net_{net}_*.pth")
                               if (m := pat.match(f.name)))
                p = iters[-1][1] if iters else p
        if p.is_file():
            out[net] = p
    return out


def stage1_run_dir(options) -> Path:
    """The run folder named by ``path.stage1`` (an experiment name or a folder)."""
    ref = options.path.stage1
    candidate = Path(ref)
    if candidate.is_dir() and (candidate / "models").is_dir():
        return candidate
    run = Path(options.path.experiments_root) / ref
    if (run / "models").is_dir():
        return run
    raise ConfigError(f"path.stage1: the stage-1 run '{ref}' was not found (looked for {candidate}/models and "
                      f"{run}/models); train stage 1 first or point path.stage1 at its run folder")


def resolve_pretrained(options) -> Dict[str, PretrainSpec]:
    """Map network suffix -> the file it is initialised from (only networks that have one)."""
    out: Dict[str, PretrainSpec] = {}
    if options.path.stage1 is not None:
        run = stage1_run_dir(options)
        files = find_model_files(run / "models", STAGE1_NETWORKS, options.path.stage1_iter)
        for net in STAGE1_NETWORKS:
            if net not in options.networks or options.path.pretrain.get(net):
                continue
            f = files.get(net)
            if f is None:
                raise ConfigError(f"path.stage1: no net_{net} checkpoint ({options.path.stage1_iter}; a save that "
                                  f"did not complete does not count) in {run / 'models'}")
            out[net] = PretrainSpec(f, options.path.strict_load.get(net, True),
                                    options.path.param_key.get(net, "params"))
    for net, p in options.path.pretrain.items():
        if not p:
            continue
        f = Path(p).expanduser()
        if not f.is_file():
            raise ConfigError(f"path.pretrain_network_{net}: file not found: {f}")
        out[net] = PretrainSpec(f, options.path.strict_load.get(net, True), options.path.param_key.get(net, "params"))
    if options.is_train and options.model_type == "HI_Diff_S2" and "le" not in out:
        raise ConfigError("HI_Diff_S2 training needs the stage-1 weights: set path.stage1 to the stage-1 run "
                          "(or path.pretrain_network_le / _g); a random frozen net_le would be useless (docs/quirks.md, quirk 19)")
    return out


def stage1_unfinished(options) -> Optional[str]:
    """Why stage 2 should not start yet, or None.

    With ``path.stage1_iter: latest``, a stage-1 run that was stopped before its
    ``train.total_iter`` (read from the run's ``config.yml``) would silently hand
    stage 2 an early checkpoint.  Naming the iteration (``path.stage1_iter: N``)
    starts from it on purpose; a folder without ``config.yml`` or checkpoint
    units (released files) is taken as it is.
    """
    if options.path.stage1 is None or str(options.path.stage1_iter) != "latest":
        return None
    run = stage1_run_dir(options)
    config = run / "config.yml"
    unit = latest_complete(run) if (run / "training_states").is_dir() else None
    if unit is None or not config.is_file():
        return None
    try:
        planned = load_options(config, is_train=True).train.total_iter
    except ConfigError as exc:     # e.g. written by an older hidiff: its planned length is still in the file
        try:
            planned = int(load_yaml(config)["train"]["total_iter"])
        except (ConfigError, KeyError, TypeError, ValueError):
            return (f"path.stage1: cannot tell whether the stage-1 run '{options.path.stage1}' finished: its "
                    f"{config} does not load ({exc}); start from its checkpoint on purpose with "
                    f"path.stage1_iter: {unit.iteration}")
    if unit.iteration >= planned:
        return None
    return (f"path.stage1: the stage-1 run '{options.path.stage1}' ({run}) has reached iteration {unit.iteration} "
            f"of its {planned}; finish it first (train its option file again with --resume auto), or start from "
            f"that checkpoint on purpose with path.stage1_iter: {unit.iteration}")
