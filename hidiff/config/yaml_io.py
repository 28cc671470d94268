"""YAML loading that refuses duplicate keys and reads scalars as YAML 1.2 does.

PyYAML silently keeps the last of two equal keys (the official GoPro_S2.yml
repeats ``param_key_g`` four times) and reads by YAML 1.1: ``2e-4`` is a string,
``0100`` is 64 (octal), ``14:10`` is 850 (base 60) and ``yes``/``on`` are true.
Here a scalar is a number or a flag only in its YAML 1.2 spelling (``2e-4`` and
``0100`` are numbers, ``14:10`` and ``yes`` are strings), duplicate keys fail, a
list or mapping used as a key fails, merge keys (``<<: *base``) are resolved, and
every alias (``*name``) is a copy of its anchor, so changing one place changes one
place.  ``dump_yaml`` quotes every string that would read back as another type.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List

import yaml

from hidiff.errors import ConfigError

_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_INT = re.compile(r"^(?:[-+]?[0-9][0-9_]*|[-+]?0o[0-7_]+|[-+]?0x[0-9a-fA-F_]+)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_MERGE = re.compile(r"^(?:<<)$")

#: (tag, pattern, first characters): the YAML 1.2 core schema, plus ``1_000``/``1e3`` numbers and merge keys
_RESOLVERS = [
    ("tag:yaml.org,2002:bool", _BOOL, list("tTfF")),
    ("tag:yaml.org,2002:int", _INT, list("-+0123456789")),
    ("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789.")),
    ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", _MERGE, ["<"]),
]
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars, duplicate-key detection and merge keys."""

    source = "<string>"
    yaml_implicit_resolvers: Dict[str, List] = {}


for _tag, _pattern, _first in _RESOLVERS:
    _StrictLoader.add_implicit_resolver(_tag, _pattern, _first)


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    """Decimal unless ``0o``/``0x``: ``0100`` is 100, as in YAML 1.2 (YAML 1.1 reads 64)."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    if text.startswith("0o"):
        return sign * int(text[2:], 8)
    if text.startswith("0x"):
        return sign * int(text[2:], 16)
    return sign * int(text, 10)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # merged keys may be overridden by the mapping's own keys
            key = "<<"
        else:
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                kind = "mapping" if isinstance(key, dict) else "list"
                raise ConfigError(f"{loader.source}: line {_line(key_node)}: a {kind} cannot be a key ({key!r}); "
                                  f"option keys are names") from None
        if key in seen:
            hint = "; merge several mappings with one '<<: [*a, *b]'" if key == "<<" else ""
            raise ConfigError(
                f"{loader.source}: duplicate key '{key}' at line {_line(key_node)} "
                f"(first defined at line {seen[key] + 1}); YAML would silently keep only the last one{hint}"
            )
        seen[key] = key_node.start_mark.line
    loader.flatten_mapping(node)
    return {loader.construct_object(k, deep=deep): loader.construct_object(v, deep=deep) for k, v in node.value}


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def override_key(item: str) -> List[str]:
    """The key path of an override ``a.b.c=value`` (``a:b.c`` alike; the part before any ``=``), as its parts:
    the one reading of an override's key, for the loader and for every check of reserved keys."""
    return [p for p in item.split("=", 1)[0].replace(":", ".").split(".") if p]


def unshared(data: Any, source: str = "<string>", _path: tuple = ()) -> Any:
    """A copy of plain data in which no dict or list appears twice (YAML aliases become copies)."""
    if isinstance(data, (dict, list)):
        if any(data is outer for outer in _path):
            raise ConfigError(f"{source}: an alias refers to a mapping or list that contains it (a cycle)")
        inner = (*_path, data)
        if isinstance(data, dict):
            return {k: unshared(v, source, inner) for k, v in data.items()}
        return [unshared(v, source, inner) for v in data]
    return data


def load_yaml_text(text: str, source: str = "<string>") -> Any:
    """Parse YAML text strictly; errors name ``source`` and the line."""
    loader = _StrictLoader(text)
    loader.source = source
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return unshared(data, source)


def load_yaml(path: str | Path) -> Any:
    """Read and strictly parse one YAML file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"option file not found: {p}")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{p}: not UTF-8 text: byte {exc.start} (line {line}) is 0x{data[exc.start]:02x}; "
                          f"save the option file as UTF-8") from None
    return load_yaml_text(text, source=str(p))


def parse_scalar(text: str) -> Any:
    """Parse a command-line override value with the same rules as the files."""
    return load_yaml_text(text, source="<override>")


class _Dumper(yaml.SafeDumper):
    """Quotes a string that this loader, or a YAML 1.1 reader, would read as something else."""


for _tag, _pattern, _first in _RESOLVERS:
    _Dumper.add_implicit_resolver(_tag, _pattern, _first)


def dump_yaml(data: Any) -> str:
    """Serialise plain data (dicts, lists, scalars) in a stable, readable order; it reads back unchanged."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, allow_unicode=True)
