"""``scripts/test.py``: restore every test set of an option file, save outputs, score, report.

Each image's prior noise is seeded from its file stem and ``manual_seed``
(docs/quirks.md, quirk 13, fixed), so outputs do not depend on processing order or device.

Results go to ``results/<options name>/<weights label>/`` (the experiment, the
release folder or the checkpoint that was tested).  A run writes into a hidden
sibling folder and swaps it in only when every set has been scored, so a re-run
replaces the previous results as a whole and a failed run leaves them as they
were.  Results of other weights or other sets in that folder (another checkpoint
of the run, a folder that happens to share the label) are never replaced: they are
moved to ``<label>_archived_<time>`` first, as a training start does with its run
folder; results are other results when any setting that changes them differs (the
checkpoint entry read, ``params`` or ``params_ema``, the metrics, the networks, the
prior seeds ...).  Everything that can be checked up front (datasets, weights,
metrics, every pair's image sizes from the file headers) is checked before any
folder is created.

Weights that record their run's settings (an experiment, a training state) are
restored with that run's networks and diffusion schedule, whether ``hidiff-test``
or a library call of :func:`run_test` names them (:func:`with_run_settings`).

A known test set (GoPro, HIDE, RealBlur, DPDD) with another image count than its
own is tested, but loudly: a warning, and ``complete: false`` with the expected and
found counts in its summary and the printed table.  A set whose dataset has scenes
(DPDD's indoor/outdoor) also gets the means per scene; without its label files it
gets the combined mean only, and its summary says why.  The ``input_*`` columns and the
grid's blurry panel use the dataset's ``blurry_view`` where it has one (a dual-pixel
set's combined view ``inputC``; without it the view used is named in the columns).

A stage-1 run (``HI_Diff_S1``) restores with the prior of the sharp image, as its
validation does (docs/quirks.md, quirk 23): its numbers are an oracle, an upper bound
of what a prior can give, not a deblurring result.  The log says so, every set's
name in the summaries reads ``<set> (ORACLE: ground-truth prior)`` and its
metadata records ``prior: ground truth (oracle)``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

from hidiff.config.schema import Options
from hidiff.data.build import build_dataset
from hidiff.data.image_io import to_uint8, to_uint16, write_png
from hidiff.engine.validation import build_metric_fns, image_restorer
from hidiff.errors import CheckpointError, ConfigError, DataError, HidiffError
from hidiff.evaluation.benchmarks import lookup_set
from hidiff.evaluation.protocols import default_protocol_for, get_protocol
from hidiff.evaluation.report import write_comparison_grid, write_set_report, write_summary_table
from hidiff.models import build_model
from hidiff.models.base import prior_problems
from hidiff.runners.prior_seeds import PRIOR_IMAGES, combine_images, combine_rows, prior_seed, std_map
from hidiff.runners.weights import from_experiment, from_files, load_into, merge_run_options
from hidiff.utils.archive import archive_previous
from hidiff.utils.progress import Progress

log = logging.getLogger("hidiff")


def select_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N' as a torch.device; ConfigError for anything else."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA device is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def metric_column(name: str, metric_type: str) -> str:
    """The report column of ``val.metrics.<name>`` (it names the metric variant)."""
    return f"val_{metric_type}" if name == metric_type else f"val_{name}_{metric_type}"


def check_output(out: torch.Tensor, image: str, weights) -> None:
    """Refuse an output with NaN/Inf values, naming the image and the weights that produced it."""
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(f"restoring {image} gave NaN/Inf values with the weights {weights.describe()}; "
                              f"these weights (or the diffusion settings) are broken; no results were written")


def with_run_settings(raw: Mapping[str, Any], weights, where: str, source: Optional[str] = None) -> Options:
    """The test options of ``raw`` (an option file + overrides, as plain data) for testing ``weights``.

    The networks and diffusion schedule come from the weights' run where it
    recorded them (a key ``raw`` sets otherwise is a ConfigError); the option
    file's weight paths (``path.pretrain_network_<x>``, ``datasets.<set>.weights``)
    are dropped, as ``weights`` serve every set.  ``where`` names ``raw`` in errors.
    """
    merged = merge_run_options(raw, weights, where)
    merged["path"] = {k: v for k, v in (merged.get("path") or {}).items()
                      if not str(k).startswith("pretrain_network_")}
    merged["datasets"] = {k: dict(b) if isinstance(b, Mapping) else b
                          for k, b in (merged.get("datasets") or {}).items()}
    for key, block in merged["datasets"].items():
        if isinstance(block, dict) and block.pop("weights", None):
            log.warning("datasets.%s.weights ignored: testing %s", key, weights.describe())
    try:
        return Options.from_yaml(merged, is_train=False, source=source)
    except ConfigError as exc:
        run = f" with the settings of {weights.config_source}" if weights.config_source else ""
        raise ConfigError(f"{where}{run}: {exc}") from None


def run_test(options, weights=None, *, device: str = "auto", experiment: Optional[str] = None,
             limit: Optional[int] = None, prior_seeds: int = 1, prior_image: str = "mean",
             std_map: bool = False) -> Dict[str, Dict[str, Any]]:
    """Run every ``test*``/``val*`` set of ``options``; returns ``{set name: summary}``.

    ``weights`` (a :class:`hidiff.runners.weights.Weights`, e.g. from the command
    line) serves every set, whatever weight files the option file names;
    without it, ``experiment`` names a run to test, and otherwise each set
    takes ``path.pretrain_network_<x>`` and its own ``weights``.
    ``prior_seeds`` > 1 restores each image from that many initial noises
    (:mod:`hidiff.runners.prior_seeds`); ``std_map`` also writes their spread.
    """
    dev = select_device(device)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: expected a positive number of images")
    if prior_seeds < 1:
        raise ConfigError(f"--prior-seeds {prior_seeds}: expected a positive number of initial noises")
    if prior_image not in PRIOR_IMAGES:
        raise ConfigError(f"--prior-image {prior_image!r}: expected one of {', '.join(PRIOR_IMAGES)}")
    if std_map and prior_seeds < 2:
        raise ConfigError(f"--std-map needs --prior-seeds K with K >= 2 (got {prior_seeds}): one restoration "
                          f"has no spread")
    param_key = "params_ema" if options.val.use_ema else "params"
    if weights is None and experiment is not None:
        weights = from_experiment(options.path.experiments_root, experiment, param_key)
    if weights is not None:  # restored with the settings the weights' run recorded, as hidiff-test does
        options = with_run_settings(options.as_given(), weights, options.source or f"options '{options.name}'",
                                    options.source)
    sets = [(k, d) for k, d in sorted(options.datasets.items()) if d.phase in ("test", "val")]
    if not sets:
        raise ConfigError(f"{options.source}: no test_<n> dataset block to run")
    metric_fns = build_metric_fns(options.val.metrics)
    torch.manual_seed(options.manual_seed)
    model = build_model(options)
    suffixes = list(model.save_names)
    # judged on the networks restored (the weights' run may supply network_g), not on the test file alone
    prior = prior_problems(options, type(model).g_takes_prior)
    if prior and type(model).g_takes_prior is False:
        raise ConfigError(f"{options.source or options.name}: " + "; ".join(prior))
    for problem in prior:
        log.warning("%s: %s; every prior seed gives the same image", options.source or options.name, problem)
    if (prior_seeds > 1 or std_map) and not model.has_prior:
        raise ConfigError(f"--prior-seeds/--std-map: model_type {options.model_type} has no diffusion prior, so "
                          f"every initial noise gives the same image")
    oracle = model.pipeline().needs_gt
    if (prior_seeds > 1 or std_map) and oracle:
        raise ConfigError(f"--prior-seeds/--std-map: model_type {options.model_type} restores with the prior of the "
                          f"ground-truth image, not from an initial noise, so every seed gives the same image")

    # everything is read and checked before the first folder is created
    plan = []
    read: Dict[tuple, Any] = {}  # sets naming the same files share one Weights
    for key, ds_opts in sets:
        if weights is not None:
            set_weights = weights
        else:
            files = {s: p for s, p in options.path.pretrain.items() if p and s in suffixes}
            files.update(ds_opts.weights or {})
            missing = [s for s in suffixes if s not in files]
            if missing:
                raise ConfigError(f"datasets.{key}: no weights for {', '.join('net_' + m for m in missing)}; set "
                                  f"path.pretrain_network_<x>, datasets.{key}.weights, --experiment, --weights "
                                  f"or --checkpoint")
            ident = tuple(sorted((s, str(p)) for s, p in files.items()))
            if ident not in read:
                read[ident] = from_files(files, param_key=param_key)
            set_weights = read[ident]
        dataset = build_dataset(ds_opts, options.manual_seed)
        if len(dataset) == 0:
            raise ConfigError(f"datasets.{key}: no image pairs in {ds_opts.name}")
        protocol = get_protocol(ds_opts.protocol or default_protocol_for(ds_opts.name))
        scored = len(dataset) if limit is None else min(limit, len(dataset))
        _check_sizes(key, ds_opts.name, dataset, protocol, scored)
        report = {"extra": _count_check(key, ds_opts.name, len(dataset), limit)}
        report["scenes"], missing = _scene_labels(key, dataset)
        if missing:
            report["extra"]["scenes_missing"] = missing
        plan.append((key, ds_opts, set_weights, dataset, protocol, report))
    if weights is not None:
        label = weights.label
    else:
        label = "+".join(sorted({p[2].label for p in plan}))
    final = Path(options.path.results_root) / options.name / label
    if final.exists() and not final.is_dir():
        raise ConfigError(f"results folder {final} exists and is not a folder")
    for w in {id(p[2]): p[2] for p in plan}.values():  # every set's weights must fit the model
        _load(model, w, options)

    work = final.parent / f".{label}.partial-{os.getpid()}"
    for stale in final.parent.glob(f".{label}.partial-*") if final.parent.is_dir() else ():
        if not _alive(stale.name.rsplit("-", 1)[-1]):  # left by a killed run; a running one keeps its own
            shutil.rmtree(stale, ignore_errors=True)
    if oracle:
        log.warning("model_type %s restores with the prior of the ground-truth (sharp) image: every number of "
                    "this run is an ORACLE (an upper bound), not a deblurring result; test a stage-2 run for those",
                    options.model_type)
    work.mkdir(parents=True)
    try:
        summaries = _run_sets(options, plan, model, dev, work, metric_fns, limit, prior_seeds, prior_image, std_map)
        _swap(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("results in %s", final)
    return summaries


def _count_check(key: str, set_name: str, found: int, limit: Optional[int]) -> Dict[str, Any]:
    """``{complete, expected_images, found_images}`` for a known test set (empty for others); a full run of one
    with another image count is warned about."""
    known = lookup_set(set_name)
    if known is None:
        return {}
    if limit is None and found != known.expected_count:
        log.warning("datasets.%s: %s should have %d images but %d were found; testing them anyway, and the "
                    "summary records complete: false (these means are not the benchmark's)",
                    key, known.name, known.expected_count, found)
    scored = found if limit is None else min(limit, found)
    return {"complete": scored == known.expected_count, "expected_images": known.expected_count,
            "found_images": found}


def _scene_labels(key: str, dataset) -> tuple[Optional[Dict[str, str]], Optional[str]]:
    """``(image -> scene, None)`` for a dataset with scenes (DPDD's indoor/outdoor), ``(None, why not)`` when its
    labels cannot be read, ``(None, None)`` for a dataset without scenes."""
    scenes = getattr(dataset, "scenes", None)
    if scenes is None:
        return None, None
    try:
        return scenes(), None
    except DataError as exc:
        log.warning("datasets.%s: no indoor/outdoor means, the combined mean only: %s", key, exc)
        return None, str(exc)


def _check_sizes(key: str, set_name: str, dataset, protocol, n: int, shown: int = 5) -> None:
    """DataError naming the pairs whose input and target differ in size, or whose target is smaller than the
    protocol needs, from the headers before anything runs (the read stopped the run at that image)."""
    side, why = protocol.min_side
    wrong, small = [], []
    for name, inputs, (gt_path, gt) in dataset.pair_sizes(n) or ():
        if gt is None:
            continue  # unreadable: the read says why
        wrong += [f"{set_name}/{name}: input '{p}' is {hw[1]}x{hw[0]} but target '{gt_path}' is {gt[1]}x{gt[0]} "
                  f"(WxH)" for p, hw in inputs if hw is not None and hw != gt]
        if min(gt) < side:
            small.append(f"{set_name}/{name} ('{gt_path}') is {gt[1]}x{gt[0]} (WxH)")
    problems = []
    for found, expected in ((wrong, "the input and target of a pair must have one size"),
                            (small, f"the {protocol.name} protocol needs at least {side}x{side} pixels ({why})")):
        if found:
            more = f"; ... and {len(found) - shown} more" if len(found) > shown else ""
            problems.append("; ".join(found[:shown]) + more + f"; {expected}")
    if problems:
        raise DataError(f"datasets.{key}: " + "; ".join(problems) + "; nothing was run or written")


def _load(model, weights, options) -> None:
    load_into(model, weights, strict=options.path.strict_load)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


#: the settings of a set's results besides set, protocol and weights: results that differ in any of them
#: (a --limit run after a full one, another tiling) are other results, and the older folder is archived
RESULT_SETTINGS = ("images", "tiling", "self_ensemble", "prior_seeds", "prior_image", "std_map", "padding", "seed",
                   "diffusion_steps", "param_keys_read", "val_metrics", "protocol_description", "restored_with")


def _results_identity(folder: Path) -> Optional[list]:
    """What a results folder holds, from its summary.json: sorted (set, protocol, weights' sha256, settings)
    per set; None when there is no readable summary."""
    try:
        summaries = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        return sorted((str(s["set"]), str(s["protocol"]),
                       tuple(sorted((k, v["sha256"]) for k, v in s["meta"]["weights"].items())),
                       json.dumps({k: s["meta"].get(k) for k in RESULT_SETTINGS}, sort_keys=True))
                      for s in summaries)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _swap(work: Path, final: Path) -> None:
    """Replace ``final`` by ``work`` (the old folder is removed only once the new one is in place); results of
    other weights or sets, or a folder without a readable summary, are archived instead of removed."""
    if final.exists():
        held = _results_identity(final)
        if held is None or held != _results_identity(work):
            archived = archive_previous(final)
            if archived is not None:
                log.warning("%s held results of other weights, test sets or settings (%s): moved to %s",
                            final, ", ".join(RESULT_SETTINGS), archived)
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    work.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _score(out, gt_q, gt_u8, quantise, protocol, metric_fns, options, name: str) -> Dict[str, Any]:
    """The protocol's metrics and ``val.metrics`` of one restoration."""
    try:
        row = dict(protocol.score_pair(quantise(out), gt_q))
    except DataError as exc:
        raise DataError(f"{name}: {exc}; no results were written") from None
    out_u8 = to_uint8(out)
    for metric, fn in metric_fns.items():
        m = options.val.metrics[metric]
        try:
            row[metric_column(metric, m.type)] = fn(out_u8, gt_u8)
        except HidiffError as exc:
            raise ConfigError(f"val.metrics.{metric} ({m.type}) cannot score {name}: {exc}; remove it from "
                              f"val.metrics or change it; no results were written") from None
    return row


def _blurry(dataset, i: int, item) -> tuple[torch.Tensor, Optional[str]]:
    """The blurry input of item ``i`` as reports score and show it, and the view it is (None: the input itself)."""
    view = getattr(dataset, "blurry_view", None)
    return view(i) if view is not None else (item["lq"][:3], None)


#: what the summaries of a stage-1 (ground-truth prior) run add to each set's name
ORACLE_LABEL = "ORACLE: ground-truth prior"


def _run_sets(options, plan, model, dev, out_root: Path, metric_fns, limit, prior_seeds: int = 1,
              prior_image: str = "mean", save_std_map: bool = False) -> Dict[str, Dict[str, Any]]:
    tile = options.val.tile_options()
    settings = options.to_dict()
    restored_with = {k: v for k, v in settings.items() if k.startswith("network_") or k == "diffusion_schedule"}
    summaries: Dict[str, Dict[str, Any]] = {}
    loaded = None
    pipeline = restore = None
    for key, ds_opts, weights, dataset, protocol, report in plan:
        if weights is not loaded:
            _load(model, weights, options)
            log.info("testing %s", weights.describe())
            model.to(dev).eval()
            pipeline = model.pipeline()
            restore = image_restorer(pipeline, tile, options.val.self_ensemble)
            loaded = weights
        oracle = pipeline.needs_gt
        vis_dir = out_root / "visualization" / ds_opts.name
        rows: List[Dict[str, Any]] = []
        n = len(dataset) if limit is None else min(limit, len(dataset))
        t0 = time.perf_counter()
        grid_done = False
        input_view = None
        bar = Progress(n, desc=f"testing {ds_opts.name}", unit="img", redraw_each=True)
        for i in range(n):
            item = dataset[i]
            lq = item["lq"].unsqueeze(0)
            gt = item["gt"].unsqueeze(0) if oracle else None  # stage 1: the prior of the sharp image
            name = f"{ds_opts.name}/{item['key']}"
            side, why = protocol.min_side
            if min(item["gt"].shape[-2:]) < side:
                raise DataError(f"{name} ('{item['gt_path']}') is {item['gt'].shape[-1]}x{item['gt'].shape[-2]} "
                                f"(WxH); the {protocol.name} protocol needs at least {side}x{side} pixels ({why}); "
                                f"no results were written")
            outs = []
            for k in range(prior_seeds):
                seed = prior_seed(item["key"], options.manual_seed, k)
                with torch.inference_mode():
                    out = restore(lq, gt, seed)
                check_output(out, name, weights)
                outs.append(out)
            quantise = to_uint16 if protocol.name == "dpdd" else to_uint8
            gt_q, gt_u8 = quantise(item["gt"]), to_uint8(item["gt"])
            row: Dict[str, Any] = {"name": item["key"],
                                   **combine_rows([_score(o, gt_q, gt_u8, quantise, protocol, metric_fns, options, name)
                                                   for o in outs])}
            out = combine_images(outs, prior_image)
            out_u8 = to_uint8(out)
            suffix = f"_{options.val.suffix}" if options.val.suffix else ""
            if options.val.save_img:
                write_png(vis_dir / f"{item['key']}{suffix}.png", quantise(out))
            if save_std_map:
                write_png(out_root / "std_map" / ds_opts.name / f"{item['key']}{suffix}.png", std_map(outs))
            if options.val.score_input or (options.val.comparison_grid and not grid_done):
                blurry, view = _blurry(dataset, i, item)
                input_view = input_view or view
            if options.val.score_input:
                prefix = "input_" if view is None or view == "inputC" else f"{view}_"  # inputR_<column>: one view
                lq_q = quantise(blurry)
                try:
                    row.update({f"{prefix}{k}": v for k, v in protocol.score_pair(lq_q, gt_q).items()})
                except DataError as exc:
                    raise DataError(f"{name} (input): {exc}; no results were written") from None
            rows.append(row)
            if options.val.comparison_grid and not grid_done:
                write_comparison_grid(out_root / ds_opts.name / f"comparison_{item['key']}.png",
                                      to_uint8(blurry), out_u8, gt_u8,
                                      labels=("blurry" if view in (None, "inputC") else f"blurry ({view} view)",
                                              "output (oracle prior)" if oracle else "output", "ground truth"))
                grid_done = True
            log.info("%s%s %d/%d %s %s", "ORACLE " if oracle else "", ds_opts.name, i + 1, n, item["key"],
                     " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float)))
            bar.update(1)
        bar.close()
        meta = {
            "set": f"{ds_opts.name} ({ORACLE_LABEL})" if oracle else ds_opts.name,
            "model": options.name, "model_type": options.model_type,
            **({"prior": "ground truth (oracle): stage 1 restores with the prior of the sharp image; an upper "
                         "bound, not a deblurring result (docs/quirks.md, quirk 23)"} if oracle else {}),
            "protocol": protocol.name, "protocol_description": protocol.describe(),
            "seed": options.manual_seed,
            "seeding": "none: the prior comes from the ground truth" if oracle else "per image: sha256(seed, stem)",
            "padding": f"mirror to multiple of {options.val.window_size}",
            "tiling": tile.describe() if tile is not None else "whole image",
            "self_ensemble": options.val.self_ensemble,
            "weights_source": weights.describe(), "weights": weights.info(),
            "diffusion_steps": pipeline.diffusion.timesteps if pipeline.needs_prior and not oracle else None,
            "val_metrics": {metric_column(k, m.type): {"type": m.type, "crop_border": m.crop_border,
                                                       "test_y_channel": m.test_y_channel}
                            for k, m in options.val.metrics.items()},
            "prior_seeds": prior_seeds,
            **({"prior_image": prior_image, "std_map": save_std_map,
                "metrics_over_seeds": "mean, and <column>_std (ddof=1)"} if prior_seeds > 1 else {}),
            "param_key": "params_ema" if options.val.use_ema else "params",
            "param_keys_read": weights.param_keys,  # a file without 'params_ema' falls back to 'params'
            "restored_with": restored_with,
            **({"input_view": input_view if input_view == "inputC" else
                f"{input_view} (one dual-pixel view: no inputC image for every pair)"} if input_view else {}),
            "device": str(dev), "images": n,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        summaries[ds_opts.name] = write_set_report(out_root / ds_opts.name, rows, meta, scenes=report["scenes"],
                                                   extra=report["extra"])
    for ext in ("md", "csv", "json"):
        write_summary_table(out_root / f"summary.{ext}", list(summaries.values()))
    return summaries
