"""Turn plain YAML data into typed dataclasses, with errors that name the key path.

Supports dataclasses, int/float/bool/str, Optional, Union, Literal, List/Tuple/
Sequence, Dict/Mapping[str, X] and ``Any``.  Unknown keys fail with a 'did you
mean'; wrong types fail with the expected type.  A field declared with
:func:`spec` also carries its description and range (``ge``/``gt``/``le``/``lt``,
applied to each item of a list), which both the loader and the JSON Schema
generator (:mod:`hidiff.config.json_schema`) read.  Every problem of a mapping is
collected and raised together as one :class:`ConfigProblems`.
"""
from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import math
import types
from typing import Any, Dict, Iterator, List, Literal, Mapping, Optional, Union, get_args, get_origin, get_type_hints

from hidiff.errors import ConfigError, ConfigProblems  # noqa: F401  (ConfigProblems: re-exported)
from hidiff.utils.suggest import did_you_mean

_HINT_CACHE: Dict[type, Dict[str, Any]] = {}
#: numpy's legacy seeding (and so every library seeded from it) takes 0 .. 2**32 - 1
MAX_SEED = 2 ** 32 - 1
_SEQUENCES = (list, tuple, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)
_YAML11_BOOLS = ("yes", "no", "on", "off", "y", "n")


def problems_of(exc: ConfigError) -> List[str]:
    """The individual problems an error stands for."""
    return list(getattr(exc, "problems", None) or [str(exc)])


class Problems:
    """Collects problems instead of stopping at the first one."""

    def __init__(self) -> None:
        self.items: List[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Record a ConfigError raised inside the block and carry on after it."""
        try:
            yield
        except ConfigError as exc:
            self.items.extend(problems_of(exc))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigProblems(self.items)


def spec(default: Any = dataclasses.MISSING, doc: str = "", *, default_factory: Any = dataclasses.MISSING,
         ge: Optional[float] = None, gt: Optional[float] = None, le: Optional[float] = None,
         lt: Optional[float] = None, registry: Optional[str] = None) -> Any:
    """A dataclass field with a description, a numeric range and/or the registry its value names."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt, "registry": registry}
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={k: v for k, v in meta.items() if v is not None and v != ""})


def range_text(meta: Mapping[str, Any]) -> str:
    """'>= 1', '> 0 and < 1', ... for a field's range, or ''."""
    parts = [f"{op} {meta[key]:g}" if isinstance(meta[key], float) else f"{op} {meta[key]}"
             for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if key in meta]
    return " and ".join(parts)


def check_range(value: Any, meta: Mapping[str, Any], path: str) -> None:
    """Raise if a number (or any number in a list/mapping) is not finite or is outside the range in ``meta``.

    Every value passes here, ranged or not: YAML's ``.nan`` and ``.inf`` are numbers no option can use.
    """
    if value is None:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_range(v, meta, f"{path}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_range(v, meta, f"{path}[{i}]")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not any(k in meta for k in ("ge", "gt", "le", "lt")):
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return
    bad = (math.isnan(value) or math.isinf(value)
           or ("ge" in meta and not value >= meta["ge"]) or ("gt" in meta and not value > meta["gt"])
           or ("le" in meta and not value <= meta["le"]) or ("lt" in meta and not value < meta["lt"]))
    if bad:
        finite = "finite " if math.isinf(value) else ""
        raise ConfigError(f"{path}: expected a {finite}value {range_text(meta)}, got {value!r}")


def type_hints(cls: type) -> Dict[str, Any]:
    """The resolved type hints of a dataclass, computed once per class."""
    if cls not in _HINT_CACHE:
        _HINT_CACHE[cls] = get_type_hints(cls)
    return _HINT_CACHE[cls]


def type_name(tp: Any) -> str:
    """A readable name for a type hint, used in error messages."""
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp))
    if origin in _SEQUENCES:
        args = get_args(tp)
        return f"list of {type_name(args[0])}" if args else "list"
    if origin in _MAPPINGS:
        args = get_args(tp)
        return f"mapping of {type_name(args[1])}" if args else "mapping"
    if dataclasses.is_dataclass(tp):
        return f"mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def convert(value: Any, tp: Any, path: str) -> Any:
    """Check/convert ``value`` against the type hint ``tp``; ``path`` names it in errors."""
    if tp is Any:
        return value
    if isinstance(tp, type) and hasattr(tp, "from_yaml"):
        return tp.from_yaml(value, path)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: expected one of {', '.join(repr(a) for a in allowed)}, "
                              f"got {value!r}{did_you_mean(str(value), [str(a) for a in allowed])}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp in _MAPPINGS:
        tp = Dict[str, Any]
        origin = dict
    if tp in _SEQUENCES:
        tp = List[Any]
        origin = list
    if origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [convert(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in _MAPPINGS:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
        _, vt = get_args(tp) or (str, Any)
        return {str(k): convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            hint = ""
            if isinstance(value, str) and value.lower() in _YAML11_BOOLS:
                hint = " (yes/no/on/off are strings in option files, as in YAML 1.2)"
            raise ConfigError(f"{path}: expected true or false, got {value!r}{hint}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type, data: Any, path: str) -> Any:
    """Build dataclass ``cls`` from a mapping, validating every key, type and range.

    All problems of the mapping are collected and raised together.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'options'}: expected a mapping ({cls.__name__}), got {data!r}")
    hints = type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    aliases = getattr(cls, "_aliases", {})
    retired = getattr(cls, "_retired", {})
    problems = Problems()
    kwargs = {}
    given = {aliases.get(str(k), str(k)) for k in data}
    for key, value in data.items():
        key = str(key)
        name = aliases.get(key, key)
        where = f"{path}.{key}" if path else key
        if key in retired:
            problems.add(f"{where}: {retired[key]}")
            continue
        if name not in fields:
            problems.add(f"{where}: unknown key{did_you_mean(key, list(fields) + list(aliases))}; "
                         f"valid keys here: {', '.join(sorted(fields))}")
            continue
        if name in kwargs:
            problems.add(f"{where}: given twice (also as an alias)")
            continue
        with problems.guard():
            converted = convert(value, hints[name], where)
            check_field(fields[name], converted, where)
            kwargs[name] = converted
    missing = [n for n, f in fields.items() if n not in given
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        problems.add(f"{path or 'options'}: missing required key(s): {', '.join(missing)}")
    problems.raise_if_any()
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(path)
    return obj


def check_field(f: dataclasses.Field, value: Any, where: str) -> None:
    """Check ``value`` against the range and registry declared by :func:`spec`."""
    from hidiff.config import registries  # deferred: registries imports this module (a cycle)

    check_range(value, f.metadata, where)
    kind = f.metadata.get("registry")
    if kind is not None and value is not None:
        if isinstance(value, str):
            registries.check_name(kind, value, where)
        else:
            registries.check_block(kind, value, where)


def to_dict(obj: Any) -> Any:
    """Plain-data view of a (nested) dataclass, for saving the resolved config."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        custom = getattr(obj, "to_plain", None)
        if callable(custom):
            return custom()
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
