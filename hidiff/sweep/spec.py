"""The sweep file: variants of a base option file, validated completely before anything runs.

A sweep file names override sets on a base training option file::

    name: ablation                 # runs are named <name>_<variant>_s<seed index>
    seeds: 2                       # manual_seed = base manual_seed + 0, 1 (or a list of seeds)
    baseline: prior
    nproc: 1                       # processes per run (torchrun when > 1)
    overrides: {train.total_iter: 100}        # every run of the sweep (stage-1 runs too)
    stage1: {opt: stage1.yml, overrides: {}}  # HI_Diff_S2 variants train their own stage-1 run first
    variants:
      - {name: no_prior, label: U-Net without prior, opt: plain.yml}   # opt: another base file
      - {name: single, overrides: {network_g.prior_pyramid: false}, stage1_overrides: {}}
    grid:                           # one variant per combination, on the base file
      diffusion_schedule.timesteps: [1, 4, 8]
    grid_label: "HI-Diff, T={timesteps}"     # labels of the grid variants (default: timesteps=1, ...)
    eval: {test: test.yml, overrides: {}, limit: null}

A variant whose model is HI_Diff_S2 links (``path.stage1``) to a stage-1 run of
the same seed; its overrides of the networks stage 2 takes from stage 1
(``network_g``, ``network_le``) go to that stage-1 run too, and variants whose
stage-1 options are equal share it.  Those networks must then be the same in
both runs (a variant's own ``opt`` file may not change them); without a
``stage1`` block an HI_Diff_S2 variant needs ``path.stage1`` or
``path.pretrain_network_le``.  A ``stage1`` block no variant uses, and
``stage1_overrides`` of a variant that trains no stage-1 run, are refused.
``name`` and ``manual_seed`` are set per run by the sweep (and ``path.stage1``
when there is a ``stage1`` block), so overrides and grids may not set them;
``eval.overrides`` and ``--eval-o`` may not set ``name``, ``manual_seed`` or
``path.*`` either (the evaluation reads the trained run's weights and writes
where the report reads), nor change ``model_type`` or a network so that those
weights no longer fit (its state_dict shapes are compared, built on the meta
device); two variants with the same resolved options are
refused.  ``--seeds N`` takes the first N of a ``seeds`` list.  The evaluation
takes the test file's sets and settings with the networks of the trained run.
Paths inside the file are relative to the sweep file.  Every run's options (and
its evaluation's) are loaded through ``hidiff.config`` here, so a wrong key or
value fails before the first run starts.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from hidiff.archs import build_network
from hidiff.config import config_hash, key_differences, load_options, options_from_text, resolved_yaml
from hidiff.config.schema import Block, Options
from hidiff.config.yaml_io import dump_yaml, load_yaml, override_key, parse_scalar
from hidiff.errors import ConfigError
from hidiff.engine.stage_link import STAGE1_NETWORKS, resolve_pretrained
from hidiff.utils.suggest import did_you_mean

TOP_KEYS = ("name", "seeds", "baseline", "nproc", "overrides", "stage1", "variants", "grid", "grid_label", "eval")
VARIANT_KEYS = ("name", "label", "opt", "overrides", "stage1_overrides")
STAGE1_KEYS = ("opt", "overrides")
EVAL_KEYS = ("test", "overrides", "limit")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: keys of a test option file replaced by the trained run's (they define the model that was trained)
MODEL_KEYS = ("model_type", "diffusion_schedule")


@dataclass
class Run:
    """One training run (and, for final-stage runs, its evaluation)."""

    name: str
    variant: str
    seed_index: int
    manual_seed: int
    stage: str                      # 'stage1' or 'final'
    options: Options
    text: str                       # resolved option YAML, as written into the sweep folder
    hash: str
    after: List[str] = field(default_factory=list)
    eval_options: Optional[Options] = None
    eval_text: Optional[str] = None

    @property
    def experiments_root(self) -> Path:
        return Path(self.options.path.experiments_root)

    @property
    def run_dir(self) -> Path:
        return self.experiments_root / self.name


@dataclass
class Variant:
    name: str
    label: str
    runs: List[Run] = field(default_factory=list)   # final-stage runs, one per seed index


@dataclass
class Sweep:
    name: str
    source: Path
    folder: Path                    # <experiments_root>/sweeps/<name>
    baseline: str
    nproc: int
    seeds: List[int]
    variants: List[Variant]
    runs: List[Run]                 # every training run, dependencies first
    eval_limit: Optional[int] = None

    def run(self, name: str) -> Run:
        return next(r for r in self.runs if r.name == name)


def _check_keys(block: Any, allowed: Sequence[str], where: str) -> Mapping[str, Any]:
    if not isinstance(block, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {block!r}")
    for key in block:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key '{key}'{did_you_mean(str(key), allowed)}; "
                              f"valid: {', '.join(allowed)}")
    return block


def _override_list(block: Any, where: str) -> List[str]:
    """``{dotted.key: value}`` -> ``['dotted.key=<json>']`` for ``hidiff.config.apply_overrides``."""
    if block is None:
        return []
    if not isinstance(block, Mapping):
        raise ConfigError(f"{where}: expected a mapping of dotted.key: value, got {block!r}")
    out = []
    for key, value in block.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise ConfigError(f"{where}: '{key}' is not a dotted option key")
        out.append(f"{key}={json.dumps(value)}")
    return out


def _check_reserved(overrides: Sequence[str], where: str, stage1_block: bool) -> None:
    """Refuse overrides of what the sweep sets per run: they would be replaced without a word."""
    for item in overrides:
        key, raw = item.split("=", 1) if "=" in item else (item, "")
        parts = override_key(key)
        if parts == ["name"]:
            raise ConfigError(f"{where}: '{key}' is set by the sweep for each run (<sweep name>_<variant>_s<seed "
                              f"index>); remove it")
        if parts == ["manual_seed"]:
            raise ConfigError(f"{where}: '{key}' is set by the sweep for each run from its 'seeds' (every variant "
                              f"uses the same seeds); remove it, and list the seeds instead, e.g. seeds: [10, 20, 30]")
        if stage1_block and parts[:1] == ["path"]:
            try:
                value = parse_scalar(raw) if len(parts) == 1 else None
            except ConfigError:
                value = None
            if parts[1:2] == ["stage1"] or (isinstance(value, Mapping) and "stage1" in value):
                raise ConfigError(f"{where}: 'path.stage1' is set by the sweep to each variant's stage-1 run (the "
                                  f"sweep file has a 'stage1' block); remove it, or drop the stage1 block to start "
                                  f"from stage-1 weights that exist")


#: what the sweep sets in every evaluation, and why an override of it would be wrong
_EVAL_RESERVED = {
    "name": "it names the trained run whose weights are evaluated and the folder the report reads its scores "
            "from",
    "manual_seed": "it is the trained run's seed",
    "path": "path.experiments_root locates the trained run's weights and path.results_root the folder the report "
            "reads; another value evaluates other weights, or writes the scores where the sweep does not look and "
            "evaluates again on every rerun",
}


def _check_eval_reserved(overrides: Sequence[str], where: str) -> None:
    """Refuse evaluation overrides of the run's name, seed and folders: the sweep sets them to the trained run's."""
    for item in overrides:
        key = item.split("=", 1)[0]
        parts = override_key(key)
        head = parts[0] if parts else ""
        if parts == ["name"] or parts == ["manual_seed"] or head == "path":
            raise ConfigError(f"{where}: '{key}' is set by the sweep for each evaluation ({_EVAL_RESERVED[head]}); "
                              f"remove it")


def _plain_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _PLAIN_NAME.match(value):
        raise ConfigError(f"{where}: '{value}' is not a plain folder name (letters, digits, '_', '.', '-')")
    return value


def _path(value: Any, sweep_file: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a file path, got {value!r}")
    p = Path(value).expanduser()
    p = p if p.is_absolute() else sweep_file.parent / p
    if not p.is_file():
        raise ConfigError(f"{where}: file not found: {p}")
    return p


def _seeds(value: Any, base_seed: int, where: str) -> List[int]:
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where}: expected a positive number of seeds or a list of seeds, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{where}: expected at least 1 seed, got {value}")
        return [base_seed + k for k in range(value)]
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"{where}: seeds repeat: {value}")
        return list(value)
    raise ConfigError(f"{where}: expected a positive number of seeds or a list of integers, got {value!r}")


def _grid_variants(grid: Any, where: str, label: Any = None) -> List[Tuple[str, str, Dict[str, Any]]]:
    """``{key: [values]}`` -> (name, label, overrides) per combination, e.g. ``timesteps4``, ``timesteps=4``.

    ``label``: a format string over the keys' last parts, e.g. ``"T={timesteps}"``.
    """
    if grid is None:
        if label is not None:
            raise ConfigError(f"{where}_label: given without a grid")
        return []
    if label is not None and not isinstance(label, str):
        raise ConfigError(f"{where}_label: expected a format string such as 'T={{timesteps}}', got {label!r}")
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"{where}: expected a mapping of dotted.key: [values]")
    keys = list(grid)
    for k in keys:
        if not isinstance(grid[k], list) or not grid[k]:
            raise ConfigError(f"{where}.{k}: expected a non-empty list of values, got {grid[k]!r}")
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        leaves = [str(k).split(".")[-1] for k in keys]
        name = re.sub(r"[^A-Za-z0-9_.-]", "", "_".join(f"{k}{str(v).lower()}" for k, v in zip(leaves, combo)))
        text = ", ".join(f"{k}={v}" for k, v in zip(leaves, combo))
        if label is not None:
            try:
                text = label.format(**dict(zip(leaves, combo)))
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(f"{where}_label: '{label}' cannot be filled from {', '.join(leaves)}: "
                                  f"{exc!r}") from None
        out.append((name, text, dict(zip(keys, combo))))
    return out


def _load(path: Path, overrides: List[str], where: str, is_train: bool = True) -> Options:
    try:
        return load_options(path, overrides, is_train=is_train)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _resolved(options: Options, where: str, is_train: bool = True) -> Tuple[str, str]:
    """The option YAML written for a run and the hash the trainer will record for it."""
    text = resolved_yaml(options)
    again = options_from_text(text, is_train=is_train, source=where)
    return text, config_hash(again)


def _eval_options(test_raw: Mapping[str, Any], test_file: Path, run: Run, folder: Path,
                  overrides: List[str]) -> Tuple[Options, str]:
    """The test options of one run: the test file's sets and settings, the run's networks and seed."""
    trained = run.options.to_dict()
    raw = {k: v for k, v in test_raw.items() if not k.startswith("network_") and k not in MODEL_KEYS}
    raw.update({k: v for k, v in trained.items() if k.startswith("network_") or k in MODEL_KEYS})
    raw["name"] = run.name
    raw["manual_seed"] = run.manual_seed
    raw["path"] = {"experiments_root": str(run.experiments_root), "results_root": str(folder / "eval")}
    val = dict(raw.get("val") or {})
    val["window_size"] = trained["val"]["window_size"]
    raw["val"] = val
    where = f"eval of {run.name} (test file {test_file})"
    text = dump_yaml(raw)
    try:
        opts = options_from_text(text, overrides, is_train=False, source=where)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not any(d.phase in ("test", "val") for d in opts.datasets.values()):
        raise ConfigError(f"{test_file}: no test_<n> dataset block to evaluate on")
    _check_same_networks(opts, run, where, overrides)
    return opts, resolved_yaml(opts)


def _parameter_shapes(block: Block, where: str) -> Dict[str, Tuple[int, ...]]:
    """The state_dict of the network a block builds, as {key: shape} (built on the meta device: no memory)."""
    with torch.device("meta"):
        net = build_network(block, where)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _shape(shapes: Mapping[str, Tuple[int, ...]], key: str) -> str:
    return str(list(shapes[key])) if key in shapes else "(absent)"


def _check_same_networks(opts: Options, run: Run, where: str, overrides: Sequence[str]) -> None:
    """The evaluation loads the trained run's weights: refuse overrides that build networks those weights do
    not fit, found here rather than after every run has trained. Options that change only how a network
    computes (``fused_attention``, ``channels_last``, ...) keep its weights and are allowed."""
    given = ", ".join(overrides)
    if opts.model_type != run.options.model_type:
        raise ConfigError(f"{where}: the evaluation overrides ({given}) change model_type "
                          f"{run.options.model_type} -> {opts.model_type}; it is the trained run's; remove it")
    trained = run.options.networks
    for net, block in opts.networks.items():
        if net not in trained:
            raise ConfigError(f"{where}: the evaluation overrides ({given}) add network_{net}, which the trained "
                              f"run does not have (it has {', '.join('network_' + n for n in trained)}); remove it")
        if block == trained[net]:
            continue
        old = _parameter_shapes(trained[net], f"{where}: network_{net} (trained)")
        new = _parameter_shapes(block, f"{where}: network_{net}")
        if old != new:
            diff = sorted(set(old) ^ set(new)) or sorted(k for k in old if old[k] != new[k])
            shown = ", ".join(f"{k} {_shape(old, k)} -> {_shape(new, k)}" for k in diff[:3])
            raise ConfigError(f"{where}: the evaluation overrides ({given}) change network_{net} so that the trained "
                              f"weights no longer fit ({len(diff)} state_dict entries differ: {shown}); only options "
                              f"that keep the weights (such as fused_attention or channels_last) may be overridden "
                              f"for an evaluation")


def _check_stage1_networks(options: Options, s1: Run, where: str, opt: Path, stage1_opt: Path) -> None:
    """Stage 2 loads its stage-1 networks from ``s1``: refuse networks that differ (it would fail to start)."""
    s2_raw, s1_raw = options.to_dict(), s1.options.to_dict()
    for n in STAGE1_NETWORKS:
        key = f"network_{n}"
        if key not in s2_raw or key not in s1_raw or options.path.pretrain.get(n):
            continue
        diff = key_differences(s1_raw[key], s2_raw[key], between=" vs ", absent=None)
        if diff:
            raise ConfigError(f"{where}: {key} of this stage-2 run ({opt}) differs from that of its stage-1 run "
                              f"'{s1.name}' ({stage1_opt}) (stage 1 vs stage 2: {'; '.join(diff[:4])}); stage 2 "
                              f"loads net_{n} from that run, so both must build the same network: make the "
                              f"variant's options match or give it stage1_overrides")


def _check_stage1_weights(options: Options, where: str) -> None:
    """An HI_Diff_S2 run of a sweep without a ``stage1`` block needs stage-1 weights that exist now."""
    if options.path.stage1 is None and not options.path.pretrain.get("le"):
        raise ConfigError(f"{where}: model HI_Diff_S2 needs stage-1 weights, but the sweep file has no "
                          f"'stage1: {{opt: ...}}' block and the options set neither path.stage1 nor "
                          f"path.pretrain_network_le; add a stage1 block (the sweep trains stage 1 per seed) or "
                          f"point path.stage1 at a finished stage-1 run")
    try:
        resolve_pretrained(options)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_distinct(variants: Sequence[Variant], src: str) -> None:
    """Refuse two variants whose runs would train the same options (e.g. ``grid: {x: [1, 1.0]}``)."""
    seen: Dict[str, str] = {}
    for v in variants:
        run = v.runs[0]
        neutral = config_hash(options_from_text(run.text, ['name="variant"'], source=f"{src}: variant '{v.name}'"))
        if neutral in seen:
            raise ConfigError(f"{src}: variants '{seen[neutral]}' and '{v.name}' resolve to the same options, so "
                              f"the sweep would train the same runs twice; remove one or make them differ")
        seen[neutral] = v.name


def load_sweep(sweep_file: str | Path, base_opt: str | Path, overrides: Sequence[str] = (),
               eval_overrides: Sequence[str] = (), seeds: Optional[int] = None) -> Sweep:
    """Read and validate a sweep file on ``base_opt``; every run's options are loaded and checked.

    ``overrides`` (``KEY=VALUE`` strings) apply to every training run after the
    sweep file's own; ``eval_overrides`` to every evaluation; ``seeds`` replaces
    the file's number of seeds.  Nothing is written.
    """
    sweep_file = Path(sweep_file)
    base_opt = Path(base_opt)
    raw = load_yaml(sweep_file)
    src = str(sweep_file)
    raw = dict(_check_keys(raw, TOP_KEYS, src))
    name = _plain_name(raw.get("name", sweep_file.stem), f"{src}: name")
    if not base_opt.is_file():
        raise ConfigError(f"-opt: base option file not found: {base_opt}")
    has_stage1 = raw.get("stage1") is not None
    common = _override_list(raw.get("overrides"), f"{src}: overrides")
    _check_reserved(common, f"{src}: overrides", has_stage1)
    _check_reserved(overrides, "-o", has_stage1)
    common += list(overrides)
    nproc = raw.get("nproc", 1)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"{src}: nproc: expected a positive integer, got {nproc!r}")

    specs: List[Tuple[str, str, Path, List[str], List[str]]] = []   # name, label, opt, overrides, stage1 extra
    variants_raw = raw.get("variants") or []
    if not isinstance(variants_raw, list):
        raise ConfigError(f"{src}: variants: expected a list of {{name: ..., overrides: ...}}")
    for i, v in enumerate(variants_raw):
        where = f"{src}: variants[{i}]"
        v = _check_keys(v, VARIANT_KEYS, where)
        if "name" not in v:
            raise ConfigError(f"{where}: every variant needs a 'name'")
        vname = _plain_name(v["name"], f"{where}.name")
        opt = _path(v["opt"], sweep_file, f"{where}.opt") if "opt" in v else base_opt
        vover = _override_list(v.get("overrides"), f"{where}.overrides")
        s1over = _override_list(v.get("stage1_overrides"), f"{where}.stage1_overrides")
        _check_reserved(vover, f"{where}.overrides", has_stage1)
        _check_reserved(s1over, f"{where}.stage1_overrides", False)
        if s1over and not has_stage1:
            raise ConfigError(f"{where}.stage1_overrides: given, but the sweep file has no 'stage1' block, so no "
                              f"stage-1 run is trained for variant '{vname}'; remove them, or add "
                              f"stage1: {{opt: ...}}")
        specs.append((vname, str(v.get("label") or vname), opt, vover, s1over))
    for gname, glabel, combo in _grid_variants(raw.get("grid"), f"{src}: grid", raw.get("grid_label")):
        gover = _override_list(combo, f"{src}: grid")
        _check_reserved(gover, f"{src}: grid", has_stage1)
        specs.append((gname, glabel, base_opt, gover, []))
    if not specs:
        raise ConfigError(f"{src}: no variants: give 'variants' and/or 'grid'")
    names = [s[0] for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{src}: variant names repeat: {', '.join(dupes)}")
    baseline = raw.get("baseline", names[0])
    if baseline not in names:
        raise ConfigError(f"{src}: baseline: no variant named '{baseline}'{did_you_mean(str(baseline), names)}; "
                          f"variants: {', '.join(names)}")

    stage1 = raw.get("stage1")
    stage1_opt, stage1_common = None, []
    if stage1 is not None:
        stage1 = _check_keys(stage1, STAGE1_KEYS, f"{src}: stage1")
        if "opt" not in stage1:
            raise ConfigError(f"{src}: stage1: needs 'opt', the stage-1 base option file")
        stage1_opt = _path(stage1["opt"], sweep_file, f"{src}: stage1.opt")
        stage1_common = _override_list(stage1.get("overrides"), f"{src}: stage1.overrides")
        _check_reserved(stage1_common, f"{src}: stage1.overrides", False)

    ev = raw.get("eval")
    if ev is None:
        raise ConfigError(f"{src}: eval: needed, e.g. eval: {{test: test.yml}} (the test sets every variant is "
                          f"scored on)")
    ev = _check_keys(ev, EVAL_KEYS, f"{src}: eval")
    if "test" not in ev:
        raise ConfigError(f"{src}: eval: needs 'test', a test option file")
    test_file = _path(ev["test"], sweep_file, f"{src}: eval.test")
    test_raw = load_yaml(test_file)
    if not isinstance(test_raw, Mapping):
        raise ConfigError(f"{test_file}: the top level must be a mapping")
    eval_file_over = _override_list(ev.get("overrides"), f"{src}: eval.overrides")
    _check_eval_reserved(eval_file_over, f"{src}: eval.overrides")
    _check_eval_reserved(eval_overrides, "--eval-o")
    eval_over = eval_file_over + list(eval_overrides)
    limit = ev.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"{src}: eval.limit: expected a positive integer or null, got {limit!r}")

    probe = _load(base_opt, common, f"{src} on {base_opt}")
    seed_list = _seeds(raw.get("seeds", 1), probe.manual_seed, f"{src}: seeds")
    if seeds is not None:
        if isinstance(raw.get("seeds"), list):    # the first N of the listed seeds: finished runs stay valid
            if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= len(seed_list):
                raise ConfigError(f"--seeds {seeds}: {src} lists {len(seed_list)} seeds ({seed_list}); give 1 to "
                                  f"{len(seed_list)}, or add seeds to its list")
            seed_list = seed_list[:seeds]
        else:
            seed_list = _seeds(seeds, probe.manual_seed, "--seeds")
    folder = Path(probe.path.experiments_root) / "sweeps" / name

    runs: List[Run] = []
    stage1_by_hash: Dict[Tuple[str, int], Run] = {}
    variants: List[Variant] = []
    for vname, label, opt, vover, s1extra in specs:
        variant = Variant(vname, label)
        for k, seed in enumerate(seed_list):
            run_name = f"{name}_{vname}_s{k}"
            fixed = [f"name={json.dumps(run_name)}", f"manual_seed={seed}"]
            where = f"{src}: variant '{vname}', seed {seed}"
            options = _load(opt, common + vover + fixed, where)
            after: List[str] = []
            if s1extra and options.model_type != "HI_Diff_S2":
                raise ConfigError(f"{src}: variant '{vname}': stage1_overrides given, but its model is "
                                  f"{options.model_type}, not HI_Diff_S2, so it trains no stage-1 run to apply "
                                  f"them to; remove them")
            if stage1_opt is not None and options.model_type == "HI_Diff_S2":
                # overrides of the networks stage 2 takes from stage 1 must reach the stage-1 run too
                shared = [o for o in vover if o.split("=", 1)[0].split(".")[0] in
                          {f"network_{n}" for n in STAGE1_NETWORKS}]
                s1name = f"{name}_stage1{'_' + vname if shared or s1extra else ''}_s{k}"
                s1fixed = [f"name={json.dumps(s1name)}", f"manual_seed={seed}",
                           f"path.experiments_root={json.dumps(str(options.path.experiments_root))}"]
                s1where = f"{src}: stage 1 of variant '{vname}', seed {seed}"
                s1 = _load(stage1_opt, stage1_common + common + shared + s1extra + s1fixed, s1where)
                neutral = options_from_text(resolved_yaml(s1), ["name=stage1"], source=s1where)
                key = (config_hash(neutral), k)
                if key not in stage1_by_hash:
                    text, h = _resolved(s1, s1where)
                    stage1_by_hash[key] = Run(s1name, vname, k, seed, "stage1", s1, text, h)
                    runs.append(stage1_by_hash[key])
                link = stage1_by_hash[key].name
                options = _load(opt, common + vover + fixed + [f"path.stage1={json.dumps(link)}"], where)
                after = [link]
                _check_stage1_networks(options, stage1_by_hash[key], where, opt, stage1_opt)
            elif options.model_type == "HI_Diff_S2":
                _check_stage1_weights(options, where)
            text, h = _resolved(options, where)
            run = Run(run_name, vname, k, seed, "final", options, text, h, after)
            run.eval_options, run.eval_text = _eval_options(test_raw, test_file, run, folder, eval_over)
            runs.append(run)
            variant.runs.append(run)
        variants.append(variant)
    if stage1_opt is not None and not any(r.stage == "stage1" for r in runs):
        models = ", ".join(f"{v.name} ({v.runs[0].options.model_type})" for v in variants)
        raise ConfigError(f"{src}: stage1: no variant uses it (only HI_Diff_S2 variants train a stage-1 run; the "
                          f"variants' models: {models}); remove the stage1 block")
    _check_distinct(variants, src)
    taken: Dict[str, str] = {}
    for r in runs:
        if r.name in taken:
            raise ConfigError(f"{src}: two runs would be named '{r.name}' (variant names clash with the derived "
                              f"stage-1 names); rename a variant")
        taken[r.name] = r.variant
    claimed = _claimed_by_other_sweeps(folder, [r.name for r in runs])
    if claimed:
        run_name, other, where = claimed[0]
        raise ConfigError(f"{src}: the run '{run_name}' is also a run of the sweep in '{other}' ({where}); "
                          f"training it here would archive that sweep's run and its evaluation would then score "
                          f"other weights; rename this sweep or the variant")
    return Sweep(name, sweep_file, folder, baseline, nproc, seed_list, variants, runs, limit)


def read_json(path: Path) -> Optional[Any]:
    """A sweep folder's JSON file (plan, run record), or None where it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _planned_runs(sweep_folder: Path) -> set:
    """The run names of a sweep folder's plan.json (written before its first training starts); none if unreadable."""
    plan = read_json(sweep_folder / "plan.json")
    try:
        return {str(r["name"]) for r in plan["runs"]}
    except (KeyError, TypeError):
        return set()


def _claimed_by_other_sweeps(folder: Path, names: Sequence[str]) -> List[Tuple[str, Path, str]]:
    """``(run, other sweep folder, what names it there)`` for each run name another sweep under the same root
    has planned or recorded (run names join sweep, variant and seed with '_', so sweep 'a' variant 'b_c' and
    sweep 'a_b' variant 'c' meet); a planned run counts before it starts, as that sweep will train it later."""
    root = folder.parent
    if not root.is_dir():
        return []
    others = sorted(p for p in root.iterdir() if p.is_dir() and p.name != folder.name)
    found = []
    for o in others:
        planned = _planned_runs(o)
        for n in names:
            if (o / "runs" / f"{n}.json").is_file():
                found.append((n, o, f"its record runs/{n}.json"))
            elif n in planned:
                found.append((n, o, "its plan.json"))
    return found
