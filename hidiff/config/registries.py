"""The named components an option file may refer to, and their keyword options.

One table per kind (arch, model, dataset, loss, metric, scheduler, optimizer,
evaluation protocol)
gives the known names for load-time checks with 'did you mean' and for the
enums of the JSON Schema.  The keyword options of a ``{type: Name, ...}`` block
are checked against the component's signature: names, annotated types, and the
ranges below (YAML can say ``dim: -4``; an annotation cannot).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, get_type_hints

import torch.optim

import hidiff.data  # noqa: F401  (registers the dataset classes)
import hidiff.losses  # noqa: F401  (registers the loss classes)
import hidiff.models  # noqa: F401  (registers the model classes)
from hidiff.archs import ARCH_REGISTRY
from hidiff.config.typed import MAX_SEED, Problems, check_range, convert
from hidiff.errors import ConfigError
from hidiff.evaluation.protocols import PROTOCOLS
from hidiff.metrics import METRIC_REGISTRY
from hidiff.models.lr_scheduler import SCHEDULERS
from hidiff.registry import DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY
from hidiff.utils.suggest import did_you_mean

KINDS = ("arch", "model", "dataset", "loss", "metric", "scheduler", "optimizer", "protocol")

_GE0, _GE1, _GT0 = {"ge": 0}, {"ge": 1}, {"gt": 0}
_SEED = {"ge": 0, "le": MAX_SEED}

#: ranges of keyword options, per kind (applied to every item of a list)
KWARG_RANGES: Dict[str, Dict[str, Dict[str, float]]] = {
    "arch": {name: _GE1 for name in ("inp_channels", "out_channels", "dim", "num_blocks", "heads", "embed_dim",
                                     "group", "in_chans", "block_num", "window_size", "in_channel",
                                     "out_channel", "inner_channel")}
    | {"num_refinement_blocks": _GE0, "ffn_expansion_factor": _GT0, "patch_expansion": _GT0,
       "channel_expansion": _GT0},
    "dataset": {"gt_size": _GE1, "length": _GE1, "kernel_size": _GE1, "kernel_size_min": _GE1, "kernel_pool": _GE1,
                "noise_sigma": _GE0, "seed": _SEED, "kernel_pool_seed": _SEED},
    "loss": {"loss_weight": _GE0},
    "scheduler": {"periods": _GE1, "milestones": _GE1, "restarts": _GE0, "restart_weights": _GE0,
                  "eta_mins": _GE0, "eta_min": _GE0, "gamma": _GT0},
    "optimizer": {"lr": _GE0, "weight_decay": _GE0, "eps": _GT0, "momentum": _GE0, "dampening": _GE0,
                  "alpha": _GE0, "betas": {"ge": 0, "lt": 1}},
}

#: torch's optimiser annotations admit tensors; an option file gives numbers and flags
OPTIMIZER_HINTS: Dict[str, Any] = {
    "lr": float, "weight_decay": float, "eps": float, "momentum": float, "dampening": float, "alpha": float,
    "betas": Tuple[float, float], "amsgrad": bool, "nesterov": bool, "maximize": bool,
    "foreach": Optional[bool], "capturable": bool, "differentiable": bool, "fused": Optional[bool],
}

#: keywords the code passes itself, never the option file
_INJECTED = {"dataset": ("phase",), "scheduler": ("optimizer", "warmup_iter"), "optimizer": ("params",)}


def _registry(kind: str):
    if kind == "arch":
        return ARCH_REGISTRY
    if kind == "model":
        return MODEL_REGISTRY
    if kind == "dataset":
        return DATASET_REGISTRY
    if kind == "loss":
        return LOSS_REGISTRY
    if kind == "metric":
        return METRIC_REGISTRY
    raise KeyError(kind)


# The trainer calls step() without a closure on dense gradients: LBFGS needs a closure, SparseAdam sparse ones.
_UNUSABLE_OPTIMIZERS = ("LBFGS", "SparseAdam")


def _optimizers() -> Dict[str, type]:
    return {n: c for n, c in vars(torch.optim).items()
            if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer
            and n not in _UNUSABLE_OPTIMIZERS}


def _schedulers() -> Dict[str, type]:
    return dict(SCHEDULERS)


def _protocols() -> Dict[str, type]:
    return dict(PROTOCOLS)


_TABLES = {"optimizer": _optimizers, "scheduler": _schedulers, "protocol": _protocols}


def names(kind: str) -> List[str]:
    """Every name an option file may use for ``kind`` (aliases included), sorted."""
    if kind in _TABLES:
        return sorted(_TABLES[kind]())
    reg = _registry(kind)
    return sorted([*reg.names(), *reg.aliases()])


def lookup(kind: str, name: Any, where: str) -> Any:
    """The component ``name`` of ``kind``; ConfigError at ``where`` listing the names otherwise."""
    table = _TABLES[kind]() if kind in _TABLES else None
    if table is None:
        reg = _registry(kind)
        if isinstance(name, str) and name in reg:
            return reg.get(name)
        known = reg.names()
    elif isinstance(name, str) and name in table:
        return table[name]
    else:
        known = sorted(table)
    raise ConfigError(f"{where}: unknown {kind} {name!r}{did_you_mean(str(name), names(kind))}; "
                      f"known: {', '.join(known)}")


def check_name(kind: str, name: Any, where: str) -> None:
    lookup(kind, name, where)


def keyword_options(kind: str, component: Callable) -> Dict[str, Tuple[Any, Any]]:
    """``{keyword: (type hint, default or inspect.Parameter.empty)}`` an option block may set.

    Empty when the component takes ``**kwargs`` (then anything goes).
    """
    fn = component.__init__ if inspect.isclass(component) else component
    params = inspect.signature(component).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {}
    if kind == "optimizer":
        hints: Mapping[str, Any] = OPTIMIZER_HINTS
    else:
        try:
            hints = get_type_hints(fn)
        except Exception:  # an annotation that does not resolve: check names only
            hints = {}
    skip = _INJECTED.get(kind, ())
    return {n: (hints.get(n, Any), p.default) for n, p in params.items()
            if n != "self" and n not in skip
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def check_kwargs(kind: str, component: Callable, kwargs: Mapping[str, Any], where: str,
                 also: Sequence[str] = ()) -> None:
    """Every unknown, missing, mistyped or out-of-range keyword of a block, raised together (``also``: other
    keys the block accepts, e.g. a dataset block's loader keys, offered as suggestions too)."""
    params = inspect.signature(component).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    options = keyword_options(kind, component)
    ranges = KWARG_RANGES.get(kind, {})
    cname = getattr(component, "__name__", str(component))
    problems = Problems()
    for key, value in kwargs.items():
        at = f"{where}.{key}"
        if key in _INJECTED.get(kind, ()):
            problems.add(f"{at}: set by hidiff itself, not by the option file"
                         + ("; use train.warmup_iter" if key == "warmup_iter" else ""))
        elif key not in options:
            problems.add(f"{at}: unknown option for '{cname}'{did_you_mean(key, list(options) + list(also))}; "
                         f"accepted: {', '.join(options)}" + (f"; and the block's own keys: {', '.join(also)}"
                                                              if also else ""))
        else:
            with problems.guard():
                convert(value, options[key][0], at)
                check_range(value, ranges.get(key, {}), at)
    missing = [n for n, (_, default) in options.items() if default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        problems.add(f"{where}: missing required option(s) {', '.join(missing)}")
    problems.raise_if_any()


def check_block(kind: str, block: Any, where: str) -> Any:
    """Check a ``{type, **kwargs}`` block (a ``Block``) of ``kind``; returns the component."""
    component = lookup(kind, block.type, f"{where}.type")
    check_kwargs(kind, component, block.kwargs, where)
    return component


def lookup_canonical(kind: str, name: str) -> str:
    """The registered name ``name`` stands for (BasicSR's metric names resolve to hidiff's variants)."""
    return _registry(kind).canonical(name)
