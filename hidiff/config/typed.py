"""Turn plain YAML data into typed dataclasses, with errors that name the key path.

Supports dataclasses, int/float/bool/str, Optional, Union, Literal, List/Tuple,
Dict[str, X] and ``Any``.  Unknown keys fail with a 'did you mean'; wrong types
fail with the expected type.  Dataclasses may define ``__post_init__`` for
cross-field checks (raise ConfigError there).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Dict, Literal, Mapping, Union, get_args, get_origin, get_type_hints

from hidiff.errors import ConfigError
from hidiff.utils.suggest import did_you_mean

_HINT_CACHE: Dict[type, Dict[str, Any]] = {}


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
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
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
                errors.append(str(exc))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: expected one of {', '.join(repr(a) for a in allowed)}, "
                              f"got {value!r}{did_you_mean(str(value), [str(a) for a in allowed])}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple, typing.Sequence):
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
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
        _, vt = get_args(tp) or (str, Any)
        return {str(k): convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
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
    """Build dataclass ``cls`` from a mapping, validating every key and type."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping ({cls.__name__}), got {data!r}")
    hints = type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    aliases = getattr(cls, "_aliases", {})
    retired = getattr(cls, "_retired", {})
    kwargs = {}
    for key, value in data.items():
        key = str(key)
        name = aliases.get(key, key)
        where = f"{path}.{key}" if path else key
        if key in retired:
            raise ConfigError(f"{where}: {retired[key]}")
        if name not in fields:
            raise ConfigError(f"{where}: unknown key{did_you_mean(key, list(fields) + list(aliases))}; "
                              f"valid keys here: {', '.join(sorted(fields))}")
        if name in kwargs:
            raise ConfigError(f"{where}: given twice (also as an alias)")
        kwargs[name] = convert(value, hints[name], where)
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{path or 'options'}: missing required key(s): {', '.join(missing)}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(path)
    return obj


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
