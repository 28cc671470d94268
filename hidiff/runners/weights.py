"""Where the weights of a test run, deblur command or export come from, and what their run recorded.

Every source is read into a :class:`Weights`: finite state_dicts per network,
the files they came from (reports name each path and sha256) and, where the
source records it, the resolved options of the training run that made them
(a training state holds ``config``; a run folder holds ``config.yml``).  Those
options, not the ones of a test file, decide the networks and the diffusion
schedule the weights are restored with (:func:`merge_run_options`).

Sources: ``--experiment NAME`` (the newest *complete* checkpoint set of the
run; never a mix of iterations), ``--checkpoint FILE`` (a training state or one
file holding several networks), ``--weights DIR`` (the authors' release
layout ``net_<x>.pth``) and the option file's ``path.pretrain_network_<x>``.
"""
from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import Tensor

import hidiff.models  # noqa: F401  (registers the model classes)
from hidiff.archs import ARCH_REGISTRY
from hidiff.config.schema import DiffusionOptions, Options
from hidiff.config.typed import from_dict
from hidiff.config.yaml_io import load_yaml
from hidiff.engine.checkpoint_store import STATE_FORMAT, CheckpointStore
from hidiff.errors import CheckpointError, ConfigError
from hidiff.inference.official_weights import NET_FILES, _split_networks, build_pipeline
from hidiff.models import build_model
from hidiff.registry import MODEL_REGISTRY
from hidiff.utils.checkpoint import check_finite, load_state_into, params_entry, safe_load, strip_prefixes
from hidiff.utils.kwargs import keyword_value
from hidiff.utils.hashing import sha256_file

log = logging.getLogger("hidiff")

StateDict = Dict[str, Tensor]
# A model folder's recorded options, beside its net_<x>.pth files (hidiff/runners/model_folder.py).
MODEL_FILE = "model.yml"


@dataclass
class Weights:
    """The networks' state_dicts from one source, with what that source records about its run."""

    kind: str                                   # 'experiment', 'checkpoint', 'weights' or 'options'
    label: str                                  # names the results folder (results/<options name>/<label>)
    state_dicts: Dict[str, StateDict]           # network suffix ('g', 'le_dm', 'd') -> state_dict
    files: Dict[str, Path]                      # network suffix -> the file it was read from
    config: Optional[Dict[str, Any]] = None     # the training run's resolved options, where recorded
    config_source: Optional[str] = None
    sha256: Dict[str, str] = field(default_factory=dict)
    iteration: Optional[int] = None             # the training iteration of a run's checkpoint, where known
    param_keys: Dict[str, str] = field(default_factory=dict)  # suffix -> the entry read ('params_ema', ...)

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = {s: sha256_file(f) for s, f in self.files.items()}

    @property
    def unfinished(self) -> Optional[str]:
        """'iteration N of T' for a checkpoint of a run that had not reached its ``train.total_iter``, else None."""
        train = self.config.get("train") if isinstance(self.config, Mapping) else None
        total = train.get("total_iter") if isinstance(train, Mapping) else None
        if self.iteration is None or not isinstance(total, int) or self.iteration >= total:
            return None
        return f"iteration {self.iteration:,} of {total:,}"

    def info(self) -> Dict[str, Dict[str, str]]:
        """``{suffix: {'path', 'sha256'}}`` for reports."""
        return {s: {"path": str(self.files[s]), "sha256": self.sha256[s]} for s in sorted(self.files)}

    def describe(self) -> str:
        where = ", ".join(f"net_{s}={f}" for s, f in sorted(self.files.items()))
        run = f"; settings from {self.config_source}" if self.config_source else ""
        return f"{self.kind} '{self.label}' ({where}{run})"

    def same_tensors(self, other: "Weights") -> List[str]:
        """Suffixes whose tensors differ between the two sources (shared suffixes only)."""
        differ = []
        for s in sorted(set(self.state_dicts) & set(other.state_dicts)):
            a, b = self.state_dicts[s], other.state_dicts[s]
            if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a):
                differ.append(s)
        return differ


# ------------------------------------------------------------------- readers
def _network_states(objs: Mapping[str, Any], param_key: str, where: Mapping[str, str]):
    """({suffix: state_dict}, {suffix: the entry read}) of loaded network files."""
    sds, keys = {}, {}
    for s, obj in objs.items():
        keys[s], sd = params_entry(obj, param_key, where[s])
        sds[s] = strip_prefixes(sd)
        check_finite(sds[s], where[s])
    return sds, keys


def from_files(files: Mapping[str, Any], *, param_key: str = "params", kind: str = "options",
               label: Optional[str] = None, where: str = "path.pretrain_network_") -> Weights:
    """One file per network (``{suffix: path}``), e.g. the option file's ``path.pretrain_network_<x>``."""
    paths = {s: Path(p).expanduser() for s, p in files.items()}
    for s, p in paths.items():
        if not p.is_file():
            raise ConfigError(f"{where}{s}: weights file not found: {p}")
    sds, keys = _network_states({s: safe_load(p) for s, p in paths.items()}, param_key,
                                {s: str(p) for s, p in paths.items()})
    if label is None:
        label = "+".join(sorted({_file_label(p, s) for s, p in paths.items()})) or "weights"
    return Weights(kind, label, sds, paths, param_keys=keys)


def _file_label(path: Path, suffix: str) -> str:
    """A results label for one weights file: ``<run>_iter<N>`` / ``<run>_latest`` for a run's
    ``models/net_<x>_<N|latest>.pth``, the folder's name for a release's ``net_<x>.pth``, else
    ``<folder>_<file stem>``; so two different files never share a label by their folder alone."""
    folder, stem = _folder_name(path.parent), path.stem
    tail = stem[len(f"net_{suffix}_"):] if stem.startswith(f"net_{suffix}_") else None
    if folder == "models" and tail:
        return f"{_folder_name(path.parent.parent)}_{'iter' + tail if tail.isdigit() else tail}"
    if stem == f"net_{suffix}":
        return folder or stem
    return f"{folder}_{stem}" if folder else stem


def _folder_name(path: Path) -> str:
    """The folder's own name, '..' and '.' resolved lexically (symlinks are not followed)."""
    return Path(os.path.abspath(path)).name


def from_release(folder: Any, param_key: str = "params") -> Weights:
    """A release folder: ``net_<x>.pth`` per network (the authors' layout).

    Only the network files a model loads are read (and recorded); any other ``net_*.pth`` there (a
    backup such as ``net_g_old.pth``) is named in a warning and left alone.
    A model folder (:mod:`hidiff.runners.model_folder`) also holds ``model.yml``, the options its run
    recorded; its networks are then rebuilt from those, not recognised from their shapes.
    """
    root = Path(folder)
    if not root.is_dir():
        raise CheckpointError(f"--weights {root}: folder not found")
    model_file = root / MODEL_FILE
    config = load_yaml(model_file) if model_file.is_file() else None
    if model_file.is_file() and not (isinstance(config, Mapping) and isinstance(config.get("model_type"), str)):
        raise ConfigError(f"{model_file}: expected a mapping with 'model_type' and the network_<x> blocks "
                          f"(a model folder's recorded options)")
    wanted = _folder_networks(config)
    files = {s: root / f"net_{s}.pth" for s in wanted if (root / f"net_{s}.pth").is_file()}
    if "g" not in files:
        raise CheckpointError(f"--weights {root}: expected the released files net_g.pth, net_le_dm.pth, net_d.pth; "
                              f"found {sorted(p.name for p in root.glob('*.pth')) or 'no .pth files'}")
    spare = sorted(p.name for p in root.glob("net_*.pth") if p.stem[4:] not in files)
    if spare:
        reads = f"{MODEL_FILE}'s model_type {config['model_type']} loads" if config and \
            config["model_type"] in MODEL_REGISTRY else "a release folder holds"
        log.warning("--weights %s: ignoring %s, not read, loaded or recorded (%s only %s)", root,
                    ", ".join(spare), reads, ", ".join(f"net_{s}.pth" for s in wanted))
    weights = from_files(files, param_key=param_key, kind="model" if config else "weights",
                         label=_folder_name(root) or "weights", where="--weights net_")
    if config:
        weights.config, weights.config_source = dict(config), str(model_file)
    return weights


def _folder_networks(config: Optional[Mapping[str, Any]]) -> List[str]:
    """The network suffixes a folder's ``net_<x>.pth`` files may hold: a model folder's model_type's
    ``save_names``; else the release's networks and those any model saves (stage 1's net_le)."""
    model_type = config.get("model_type") if isinstance(config, Mapping) else None
    if model_type in MODEL_REGISTRY:
        return list(MODEL_REGISTRY.get(model_type).save_names)
    known = [name[4:] for name in NET_FILES]
    for name in MODEL_REGISTRY:
        known += [s for s in MODEL_REGISTRY.get(name).save_names if s not in known]
    return known


def _from_state(verified, param_key: str, label: str, kind: str) -> Weights:
    root = verified.path.parent.parent
    files = {name: root / entry["file"] for name, entry in verified.state.get("networks", {}).items()}
    sds, keys = _network_states(verified.networks, param_key, {n: str(files[n]) for n in verified.networks})
    config = verified.state.get("config")
    return Weights(kind, label, sds, files, config if isinstance(config, Mapping) else None,
                   str(verified.path) if isinstance(config, Mapping) else None,
                   {n: e["sha256"] for n, e in verified.state["networks"].items()}, verified.iteration, keys)


def from_checkpoint(path: Any, param_key: str = "params_ema") -> Weights:
    """A hidiff training state (verified against its manifest) or one file holding several networks."""
    p = Path(path)
    obj = safe_load(p)
    if isinstance(obj, Mapping) and obj.get("format") == STATE_FORMAT:
        verified = CheckpointStore(p.parent.parent).verify(p)
        return _from_state(verified, param_key, f"{p.parent.parent.name}_iter{verified.iteration}", "checkpoint")
    nets = _split_networks(obj, p)
    sds, keys = _network_states({name[4:]: v for name, v in nets.items()}, param_key,
                                {name[4:]: f"{p}[{name}]" for name in nets})
    return Weights("checkpoint", p.stem, sds, {s: p for s in sds}, param_keys=keys)


def newest_complete_state(run: Path):
    """The newest checkpoint set of ``run`` whose state and every network file it lists are intact."""
    store = CheckpointStore(run)
    skipped = []
    for it in reversed(store.iterations()):
        try:
            return store.verify(store.state_path(it)), skipped
        except CheckpointError as exc:
            skipped.append(f"iteration {it}: {exc}")
    return None, skipped


def from_experiment(experiments_root: Any, name: str, param_key: str = "params_ema") -> Weights:
    """A run folder: its newest complete checkpoint set, else its complete ``net_<x>_latest.pth`` set.

    Network files of a set whose state is missing or does not match them (a
    save cut short) are never used, so all networks come from one iteration.
    """
    run = Path(experiments_root) / name
    if not run.is_dir():
        raise CheckpointError(f"--experiment {name}: no run folder {run}")
    verified, skipped = newest_complete_state(run)
    for reason in skipped:
        log.warning("experiment %s: skipping an incomplete checkpoint set (%s)", name, reason)
    if verified is not None:
        return _from_state(verified, param_key, name, "experiment")
    config_file = run / "config.yml"
    config = load_yaml(config_file) if config_file.is_file() else None
    models = run / "models"
    if isinstance(config, Mapping) and config.get("model_type") in MODEL_REGISTRY:
        wanted = list(MODEL_REGISTRY.get(config["model_type"]).save_names)
    else:
        wanted = sorted(p.name[4:-len("_latest.pth")] for p in models.glob("net_*_latest.pth"))
    files = {s: models / f"net_{s}_latest.pth" for s in wanted}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if not files or missing:
        detail = "; ".join(skipped) if skipped else "no training_states/<iter>.state"
        raise CheckpointError(f"--experiment {name}: no complete checkpoint in {run} ({detail}; "
                              f"missing {', '.join(missing) or 'net_<x>_latest.pth'})")
    weights = from_files(files, param_key=param_key, kind="experiment", label=name, where=f"{models}/net_")
    if isinstance(config, Mapping):
        weights.config, weights.config_source = dict(config), str(config_file)
    return weights


# ------------------------------------------------------- the run's settings
def _network_value(block: Mapping[str, Any], key: str):
    """``block[key]``, else the network's default for it (``inspect.Parameter.empty``: neither)."""
    try:
        arch = ARCH_REGISTRY.get(block["type"])
    except Exception:
        return block.get(key, inspect.Parameter.empty)
    return keyword_value(arch, block, key)


def _diffusion_value(block: Mapping[str, Any], key: str):
    """The effective value of ``diffusion_schedule.<key>`` (official defaults resolved)."""
    opts = from_dict(DiffusionOptions, dict(block or {}), "diffusion_schedule")
    if key == "apply_ldm":
        return opts.apply_ldm
    if key == "schedule":
        return opts.resolved_schedule
    return getattr(opts.build().settings, key, getattr(opts, key, None))


def merge_run_options(raw: Mapping[str, Any], weights: Weights, where: str) -> Dict[str, Any]:
    """``raw`` (an option file + overrides) with the networks and diffusion schedule of ``weights``' run.

    A key ``raw`` sets explicitly to another value than the run's is a
    ConfigError naming the key and both values; keys ``raw`` leaves out come
    from the run.  Without recorded settings ``raw`` is returned unchanged.
    """
    if weights.config is None:
        return dict(raw)
    run = weights.config
    src = weights.config_source
    problems = []
    if "model_type" in raw and raw["model_type"] != run.get("model_type"):
        problems.append(f"model_type: {where} says {raw['model_type']!r}, the run {run.get('model_type')!r}")
    for key, block in run.items():
        if not key.startswith("network_") or key not in raw or not isinstance(block, Mapping):
            continue
        mine = raw[key] if isinstance(raw[key], Mapping) else {}
        for k, v in mine.items():
            theirs = _network_value(block, k)
            if theirs is inspect.Parameter.empty or _differs(v, theirs):
                problems.append(f"{key}.{k}: {where} says {v!r}, the run was trained with "
                                f"{'no such key' if theirs is inspect.Parameter.empty else repr(theirs)}")
    mine_d = raw.get("diffusion_schedule")
    if isinstance(mine_d, Mapping) and run.get("diffusion_schedule") is not None:
        for k, v in mine_d.items():
            try:
                a, b = _diffusion_value(mine_d, k), _diffusion_value(run["diffusion_schedule"], k)
            except ConfigError:
                continue  # an invalid key is reported when the merged options are validated
            if _differs(a, b):
                problems.append(f"diffusion_schedule.{k}: {where} says {v!r} ({a!r}), the run was trained with "
                                f"{b!r}")
    if problems:
        raise ConfigError(f"the weights {weights.describe()} were trained with other settings than {where} "
                          f"states:\n  - " + "\n  - ".join(problems)
                          + f"\n  remove these keys from {where} (the run's settings are used) or test other weights")
    merged = {k: v for k, v in raw.items() if not k.startswith("network_") and k != "diffusion_schedule"}
    merged["model_type"] = run.get("model_type", raw.get("model_type"))
    merged.update({k: v for k, v in run.items() if k.startswith("network_")})
    if run.get("diffusion_schedule") is not None:
        merged["diffusion_schedule"] = dict(run["diffusion_schedule"])
    return merged


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return float(a) != float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
    return a != b


# ------------------------------------------------------------------- loading
def load_into(model, weights: Weights, strict: Optional[Mapping[str, bool]] = None) -> None:
    """Load ``weights`` into ``model``'s networks (strict unless ``strict[suffix]`` is false)."""
    nets = model.networks()
    missing = [s for s in model.save_names if s not in weights.state_dicts]
    if missing:
        raise CheckpointError(f"{weights.describe()}: no weights for {', '.join('net_' + s for s in missing)}")
    for s in model.save_names:
        load_state_into(nets[s], weights.state_dicts[s], strict=(strict or {}).get(s, True),
                        source=str(weights.files[s]))
        log.debug("loaded net_%s from %s", s, weights.files[s])


def inference_options(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The part of a run's resolved options that rebuilds its networks for inference (what a model
    folder's ``model.yml`` holds): name, model_type, the network_<x> blocks, diffusion_schedule and
    ``val.window_size``/``val.use_ema``; keys the run did not record are left out."""
    out: Dict[str, Any] = {k: config[k] for k in ("name", "model_type") if k in config}
    out.update({k: v for k, v in config.items() if k.startswith("network_")})
    if config.get("diffusion_schedule") is not None:
        out["diffusion_schedule"] = dict(config["diffusion_schedule"])
    val = config.get("val") or {}
    kept = {k: val[k] for k in ("window_size", "use_ema") if k in val}
    if kept:
        out["val"] = kept
    return out


def run_options(weights: Weights, timesteps: Optional[int] = None):
    """The typed options of ``weights``' run (networks, diffusion, padding), for inference only."""
    cfg = weights.config or {}
    raw = inference_options(cfg)
    raw.update(name=cfg.get("name", weights.label), model_type=cfg.get("model_type"))
    raw.setdefault("val", {})
    if timesteps is not None and "diffusion_schedule" in raw:
        raw["diffusion_schedule"]["timesteps"] = int(timesteps)
    try:
        return Options.from_yaml(raw, is_train=False, source=weights.config_source)
    except ConfigError as exc:
        raise ConfigError(f"{weights.config_source}: the run's recorded options do not build a model ({exc})") \
            from None


def inference_pipeline(weights: Weights, device, timesteps: Optional[int] = None):
    """``(RestorationPipeline, description)``: from the run's recorded options, else recognised from shapes."""
    if weights.config is None:
        pipeline, rec = build_pipeline({f"net_{s}": sd for s, sd in weights.state_dicts.items()}, device=device,
                                       timesteps=timesteps,
                                       sources={f"net_{s}": str(f) for s, f in weights.files.items()})
        return pipeline, f"{rec.describe()} [{weights.kind} {weights.label}]"
    options = run_options(weights, timesteps)
    model = build_model(options)
    if model.pipeline().needs_gt:
        raise ConfigError(f"{weights.describe()}: a {options.model_type} run restores with the ground-truth "
                          f"prior; use its stage-2 run instead")
    load_into(model, weights)
    pipeline = model.to(device).eval().pipeline()
    steps = f", diffusion T={pipeline.diffusion.timesteps}" if pipeline.needs_prior else ""
    note = ""
    if timesteps is not None and weights.config.get("diffusion_schedule") is not None:
        trained = _diffusion_value(weights.config["diffusion_schedule"], "timesteps")
        note = f" (--timesteps; the run was trained with T={trained})"
    return pipeline, f"{options.model_type} from {weights.describe()}{steps}{note}"


def experiment_pipeline(name: str, device, experiments_root: Any = "experiments", timesteps: Optional[int] = None):
    """``(RestorationPipeline, description dict)`` of a run, restored with the settings the run recorded."""
    weights = from_experiment(experiments_root, name)
    pipeline, text = inference_pipeline(weights, device, timesteps)
    model_type = (weights.config or {}).get("model_type")
    return pipeline, {"experiment": name, "model_type": model_type, "config": weights.config_source,
                      "weights": weights.info(), "description": text}
