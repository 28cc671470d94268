"""Check YAML keyword blocks against a constructor's signature before calling it."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from hidiff.errors import ConfigError
from hidiff.utils.suggest import did_you_mean


def check_kwargs(fn: Callable, kwargs: Mapping[str, Any], where: str) -> None:
    """Fail with a 'did you mean' message if ``kwargs`` does not fit ``fn``'s signature.

    ``where`` is the config path of the block (e.g. ``network_g``) used in messages.
    """
    sig = inspect.signature(fn)
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if n != "self" and p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"{where}.{key}: unknown option for '{getattr(fn, '__name__', fn)}'"
                f"{did_you_mean(key, accepted)}; accepted: {', '.join(accepted)}"
            )
    missing = [n for n, p in params.items() if n != "self" and p.default is inspect.Parameter.empty
               and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
               and n not in kwargs]
    if missing:
        raise ConfigError(f"{where}: missing required option(s) {', '.join(missing)}")


def keyword_value(fn: Callable, given: Mapping[str, Any], key: str, missing: Any = inspect.Parameter.empty) -> Any:
    """The value keyword ``key`` takes in ``fn(**given)``: the given one, else the signature's default;
    ``missing`` where ``fn`` has no such keyword, no default for it, or no readable signature."""
    if key in given:
        return given[key]
    try:
        param = inspect.signature(fn).parameters.get(key)
    except (TypeError, ValueError):
        return missing
    return missing if param is None or param.default is inspect.Parameter.empty else param.default


def build_from_registry(registry, block: Mapping[str, Any], where: str, **extra: Any):
    """Instantiate ``registry[block['type']](**rest, **extra)`` after checking the keys."""
    if not isinstance(block, Mapping) or "type" not in block:
        raise ConfigError(f"{where}: expected a mapping with a 'type' key, got {block!r}")
    kwargs = {k: v for k, v in block.items() if k != "type"}
    kwargs.update(extra)
    try:
        cls = registry.get(block["type"])
    except Exception as exc:
        raise ConfigError(f"{where}.type: {exc}") from None
    check_kwargs(cls, kwargs, where)
    return cls(**kwargs)
