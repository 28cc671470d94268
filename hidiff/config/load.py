"""Load an option file (+ command-line overrides) into a validated ``Options``.

Overrides use dotted paths: ``-o train.total_iter=10 -o network_g.dim=16``.
BasicSR's ``--force_yml train:total_iter=10`` spelling (colons) is accepted too.
Values are parsed as YAML scalars (``true``, ``2e-4``, ``[1, 2]``).
"""
from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, MutableMapping, Tuple

from hidiff.config.schema import Options, TrainOptions
from hidiff.config.typed import ConfigProblems, problems_of
from hidiff.config.yaml_io import dump_yaml, load_yaml, load_yaml_text, override_key, parse_scalar, unshared
from hidiff.errors import ConfigError
from hidiff.utils.atomic import atomic_write_text


def apply_overrides(data: MutableMapping[str, Any], overrides: Iterable[str]) -> MutableMapping[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` override applied."""
    return _apply(data, overrides)[0]


def _apply(data: MutableMapping[str, Any], overrides: Iterable[str]) -> Tuple[MutableMapping[str, Any],
                                                                              Dict[str, str]]:
    """``apply_overrides`` plus ``{key path as the file spells it: override}`` (the last override of a key)."""
    data = unshared(data)
    sources: Dict[str, str] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected KEY.PATH=VALUE")
        key, raw = item.split("=", 1)
        parts = override_key(key)
        if not parts:
            raise ConfigError(f"override '{item}': empty key path")
        node: Any = data
        spelled = []
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, MutableMapping):
                raise ConfigError(f"override '{item}': '{'.'.join(parts[:i])}' is not a mapping")
            part = _spelled_as_in_file(node, part)
            spelled.append(part)
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        if not isinstance(node, MutableMapping):
            raise ConfigError(f"override '{item}': '{'.'.join(parts[:-1])}' is not a mapping")
        try:
            value = parse_scalar(raw)
        except ConfigError as exc:
            why = " ".join(str(exc).replace("<override>: invalid YAML:", "").split())
            raise ConfigError(f"override '{item}': the value is not valid YAML ({why}); quote it, e.g. "
                              f"{key}='\"{raw}\"'") from None
        last = _spelled_as_in_file(node, parts[-1])
        node[last] = value
        path = ".".join([*spelled, last])
        sources.pop(path, None)
        sources[path] = item
    return data, sources


def _from_overrides(exc: ConfigError, sources: Mapping[str, str]) -> List[str]:
    """The problems of ``exc``, each one that an override caused marked '(from -o KEY=VALUE)'."""
    out = []
    for problem in problems_of(exc):
        for key, item in reversed(list(sources.items())):  # a later override replaced the earlier ones
            if problem.startswith(key) and problem[len(key):len(key) + 1] in (":", ".", "["):
                problem += f" (from -o {item})"
                break
        out.append(problem)
    return out


#: keys with two accepted spellings (BasicSR's and hidiff's, the schema's alias tables); an override follows
#: the one the file uses
_SPELLINGS = tuple({alias, name} for alias, name in TrainOptions._aliases.items())


def _spelled_as_in_file(node: MutableMapping[str, Any], key: str) -> str:
    for names in _SPELLINGS:
        if key in names:
            present = [n for n in names if n in node and n != key]
            if present and key not in node:
                return present[0]
    return key


def load_options(path: str | Path, overrides: Iterable[str] = (), is_train: bool = True) -> Options:
    """Read, override and validate an option file."""
    raw = load_yaml(path)
    if raw is None:
        raise ConfigError(f"{path}: the option file is empty")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping")
    raw, sources = _apply(dict(raw), overrides)
    try:
        return Options.from_yaml(raw, is_train=is_train, source=str(path))
    except ConfigError as exc:
        msg = str(ConfigProblems(_from_overrides(exc, sources)))
        if not msg.startswith(str(path)):
            msg = f"{path}: {msg}"
        raise ConfigError(msg) from None


def options_from_text(text: str, overrides: Iterable[str] = (), is_train: bool = True,
                      source: str = "<string>") -> Options:
    """Like ``load_options`` for YAML given as text (tests, generated configs)."""
    raw, sources = _apply(dict(load_yaml_text(text, source)), overrides)
    try:
        return Options.from_yaml(raw, is_train=is_train, source=source)
    except ConfigError as exc:
        if not sources:
            raise
        raise ConfigProblems(_from_overrides(exc, sources)) from None


def resolved_yaml(options: Options) -> str:
    return dump_yaml(options.to_dict())


def config_hash(options: Options) -> str:
    """sha256 of the resolved options, ignoring keys that don't change the result."""
    data = options.to_dict()
    data.get("path", {}).pop("resume_state", None)
    data.get("train", {}).pop("checkpoint_levels", None)  # memory for time; the gradients are the same
    data.get("train", {}).pop("keep_cpu_memory", None)  # where freed memory goes; the results are the same
    data.get("train", {}).pop("recompute_ffn", None)  # memory for time; the gradients are the same
    data.get("train", {}).pop("recompute_branches", None)  # likewise
    data.pop("logger", None)
    blob = json.dumps(data, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
    """Unified diff lines between two resolved option dicts."""
    a = dump_yaml(dict(old)).splitlines()
    b = dump_yaml(dict(new)).splitlines()
    return list(difflib.unified_diff(a, b, "saved", "current", lineterm=""))


def key_differences(old: Mapping[str, Any], new: Mapping[str, Any], *, between: str = " -> ",
                    absent: Any = "(absent)", prefix: str = "") -> List[str]:
    """``key.path: old<between>new`` for every leaf where two nested mappings differ (a missing key reads as
    ``absent``)."""
    out: List[str] = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, absent), new.get(key, absent)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += key_differences(a, b, between=between, absent=absent, prefix=f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r}{between}{b!r}")
    return out


def save_resolved(options: Options, path: str | Path) -> None:
    """Write the resolved options atomically (the run folder's config.yml)."""
    header = f"# resolved options of '{options.name}' (from {options.source})\n"
    atomic_write_text(path, header + resolved_yaml(options))
