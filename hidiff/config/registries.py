"""The named components an option file may refer to, and their keyword options.

One table per kind (arch, model, dataset, loss, metric, scheduler, optimizer,
evaluation protocol)
gives the known names for load-time checks with 'did you mean' and for the
enums of the JSON Schema.  The keyword options of a ``{type: Name, ...}`` block
are checked against the component's signature: names, annotated types (or the
default's type), and the ranges and choices below (YAML can say ``dim: -4``; an
annotation cannot).  Then the component's own checks run: a network is built on
the meta device, an optimiser and a schedule on a stand-in parameter, and a
dataset's value checks are called, so what its constructor refuses fails at load.
"""
from __future__ import annotations

import inspect
import re
import types
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union, get_args, get_origin, \
    get_type_hints

import torch.optim

import hidiff.data  # noqa: F401  (registers the dataset classes)
import hidiff.losses  # noqa: F401  (registers the loss classes)
import hidiff.models  # noqa: F401  (registers the model classes)
from hidiff.archs import ARCH_REGISTRY
from hidiff.config.typed import MAX_SEED, Problems, check_range, convert
from hidiff.errors import ConfigError
from hidiff.data.blur_kernels import check_kernel_size, check_min_kernel_size, noise_range
from hidiff.data.image_source import backend_name
from hidiff.evaluation.protocols import PROTOCOLS
from hidiff.losses.pixel_loss import _REDUCTIONS as LOSS_REDUCTIONS
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
    "loss": {"loss_weight": _GE0, "eps": _GT0},
    "scheduler": {"periods": _GE1, "milestones": _GE1, "restarts": _GE0, "restart_weights": _GE0,
                  "eta_mins": _GE0, "eta_min": _GE0, "gamma": _GT0},
    "optimizer": {"lr": _GE0, "weight_decay": _GE0, "eps": _GT0, "momentum": _GE0, "dampening": _GE0,
                  "alpha": _GE0, "betas": {"ge": 0, "lt": 1}},
}

#: the values a string keyword accepts, per kind (checked at load and listed in the JSON Schema).  A loss block
#: of an option file is a training loss (train.*_opt): it must give one number to back-propagate, so the loss
#: classes' per-pixel ``reduction: none`` is not offered.
KWARG_CHOICES: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "loss": {"reduction": tuple(r for r in LOSS_REDUCTIONS if r != "none")},
    "dataset": {"view_order": ("LR", "RL")},
}

#: why a value the component itself accepts is refused in an option file, per kind and keyword
REFUSED_CHOICES: Dict[str, Dict[str, Dict[str, str]]] = {
    "loss": {"reduction": {"none": "a training loss must be one number per step to back-propagate, and "
                                   "'none' keeps one value per pixel (the first backward would fail)"}},
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

    A keyword without an annotation takes its type from its default (``False``: a flag, ``0.5``: a
    number; an int default admits any number, as Python writes ``0`` for ``0.0``).  Empty when the
    component takes ``**kwargs`` (then anything goes).
    """
    fn = component.__init__ if inspect.isclass(component) else component
    params = inspect.signature(component).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {}
    try:
        hints: Dict[str, Any] = get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: types from the defaults
        hints = {}
    if kind == "optimizer":
        hints = {**{n: _without_tensors(h) for n, h in hints.items()}, **OPTIMIZER_HINTS}
    skip = _INJECTED.get(kind, ())
    return {n: (hints.get(n, _hint_of_default(p.default)), p.default) for n, p in params.items()
            if n != "self" and n not in skip
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def _hint_of_default(default: Any) -> Any:
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float)):
        return float
    if isinstance(default, str):
        return str
    return Any


def _without_tensors(hint: Any) -> Any:
    """torch's ``float | Tensor`` as ``float`` (also inside tuples); ``Any`` where only a tensor fits."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is torch.Tensor:
        return Any
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not torch.Tensor]
        if len(rest) == len(args):
            return hint
        return Any if not rest else _without_tensors(rest[0]) if len(rest) == 1 else Union[tuple(rest)]
    if origin is tuple and args:
        return Tuple[tuple(_without_tensors(a) for a in args)]
    return hint


def _plain(original: Any, converted: Any) -> Any:
    """The converted value to store: ``16.0`` for an int is ``16``, but an int where a number is expected
    stays an int and a list stays a list, so a file's resolved options (and their hash) stay as written."""
    if isinstance(converted, float) and isinstance(original, int) and not isinstance(original, bool):
        return original
    if isinstance(converted, (list, tuple)) and isinstance(original, (list, tuple)) \
            and len(converted) == len(original):
        return [_plain(o, c) for o, c in zip(original, converted)]
    if isinstance(converted, dict) and isinstance(original, Mapping):
        return {k: _plain(original.get(k), v) for k, v in converted.items()}
    return converted


def check_kwargs(kind: str, component: Callable, kwargs: Mapping[str, Any], where: str,
                 also: Sequence[str] = ()) -> Dict[str, Any]:
    """Every unknown, missing, mistyped or out-of-range keyword of a block, raised together (``also``: other
    keys the block accepts, e.g. a dataset block's loader keys, offered as suggestions too).

    Returns the keywords as the component receives them (``dim: 16.0`` becomes 16).  The component's own
    checks (list lengths, allowed values) run here too, so the file fails at load, not at build.
    """
    params = inspect.signature(component).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    options = keyword_options(kind, component)
    ranges = KWARG_RANGES.get(kind, {})
    choices = KWARG_CHOICES.get(kind, {})
    cname = getattr(component, "__name__", str(component))
    problems = Problems()
    out: Dict[str, Any] = {}
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
                converted = convert(value, options[key][0], at)
                check_range(converted, ranges.get(key, {}), at)
                if key in choices and converted not in choices[key]:
                    why = REFUSED_CHOICES.get(kind, {}).get(key, {}).get(converted) \
                        if isinstance(converted, str) else None
                    raise ConfigError(f"{at}: expected one of {', '.join(map(repr, choices[key]))}, got "
                                      f"{converted!r}" + (f": {why}" if why else
                                                          did_you_mean(str(converted), choices[key])))
                out[key] = _plain(value, converted)
    missing = [n for n, (_, default) in options.items() if default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        problems.add(f"{where}: missing required option(s) {', '.join(missing)}")
    problems.raise_if_any()
    if kind in _TRIALS:
        _TRIALS[kind](component, out, where)
    return out


def check_block(kind: str, block: Any, where: str) -> Any:
    """Check a ``{type, **kwargs}`` block (a ``Block``) of ``kind``, storing its converted keywords; returns
    the component."""
    component = lookup(kind, block.type, f"{where}.type")
    block.kwargs = check_kwargs(kind, component, block.kwargs, where)
    return component


# ---------------------------------------------------------------- the components' own checks, at load time
#: what a component's constructor raises for a value it cannot use
_REFUSALS = (ConfigError, ValueError, AssertionError)


def _located(where: str, cname: str, kwargs: Mapping[str, Any], exc: BaseException) -> ConfigError:
    """A constructor's message under the block's key path: 'heads: ...' of network_g is 'network_g.heads: ...'."""
    msg = " ".join(str(exc).split()) or f"{cname} refused these options ({type(exc).__name__})"
    if msg.startswith(where):
        return ConfigError(msg)
    head = re.match(r"^(?:\w+\.)?(\w+)(?=[:.\[])", msg)  # 'heads: ...' or 'Owner.heads: ...'
    if head and head.group(1) in kwargs:
        return ConfigError(f"{where}.{msg[head.start(1):]}")
    return ConfigError(f"{where}: {msg}")


#: networks already built on the meta device (a sweep or a test loads the same blocks many times)
_BUILT: set = set()


def _trial_arch(component: Callable, kwargs: Dict[str, Any], where: str) -> None:
    """Build the network on the meta device (no memory, no weights): its constructor checks everything."""
    key = (component, repr(sorted(kwargs.items())))
    if key in _BUILT:
        return
    try:
        with torch.device("meta"):
            component(**kwargs)
    except _REFUSALS as exc:
        raise _located(where, component.__name__, kwargs, exc) from None
    if len(_BUILT) > 256:
        _BUILT.clear()
    _BUILT.add(key)


#: device-dependent optimiser switches: a CPU stand-in parameter cannot try them
_DEVICE_OPTIONS = ("fused", "capturable", "foreach")


def _trial_optimizer(component: Callable, kwargs: Dict[str, Any], where: str) -> None:
    """torch checks an optimiser's values in its constructor (``Invalid lr_decay value``)."""
    params = [torch.nn.Parameter(torch.zeros(2, 2))]
    try:
        component(params, **{k: v for k, v in kwargs.items() if k not in _DEVICE_OPTIONS})
    except _REFUSALS as exc:
        raise _located(where, component.__name__, kwargs, exc) from None


def try_scheduler(component: Callable, kwargs: Dict[str, Any], where: str) -> None:
    """A schedule checks its lists (one eta_min per period, ...) in its constructor."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    try:
        component(optimizer, **kwargs)
    except _REFUSALS as exc:
        raise _located(where, component.__name__, kwargs, exc) from None


#: a dataset's keyword -> its constructor's check (building a dataset reads the disk, so only these run)
_DATASET_CHECKS: Dict[str, Callable[[Any, Mapping[str, Any]], Any]] = {
    "kernel_size": lambda v, kw: check_kernel_size(v),
    "kernel_size_min": lambda v, kw: check_min_kernel_size(v, kw["kernel_size"]),
    "noise_sigma": lambda v, kw: noise_range(v),
    "io_backend": lambda v, kw: backend_name(v),
}


def _trial_dataset(component: Callable, kwargs: Dict[str, Any], where: str) -> None:
    """The constructor's checks of the values in ``_DATASET_CHECKS`` (with the defaults of the others)."""
    defaults = {n: p.default for n, p in inspect.signature(component).parameters.items()}
    problems = Problems()
    for key, check in _DATASET_CHECKS.items():
        if key in kwargs:
            with problems.guard():
                try:
                    check(kwargs[key], {**defaults, **kwargs})
                except _REFUSALS as exc:
                    msg = " ".join(str(exc).split())
                    raise ConfigError(f"{where}.{key}: {msg.removeprefix(f'{key}: ')}") from None
    problems.raise_if_any()


def _trial_loss(component: Callable, kwargs: Dict[str, Any], where: str) -> None:
    """A loss's own checks: its ``check_options`` where building it is costly (the perceptual loss loads VGG
    weights), else its constructor (a pixel loss holds no weights)."""
    check = getattr(component, "check_options", None)
    try:
        if callable(check):
            check(**kwargs)
        else:
            component(**kwargs)
    except _REFUSALS as exc:
        raise _located(where, getattr(component, "__name__", str(component)), kwargs, exc) from None


#: run by check_kwargs; a schedule's trial is ``try_scheduler``, which TrainOptions runs after its own checks
_TRIALS: Dict[str, Callable[[Callable, Dict[str, Any], str], None]] = {
    "arch": _trial_arch, "optimizer": _trial_optimizer, "dataset": _trial_dataset, "loss": _trial_loss,
}


def lookup_canonical(kind: str, name: str) -> str:
    """The registered name ``name`` stands for (BasicSR's metric names resolve to hidiff's variants)."""
    return _registry(kind).canonical(name)
