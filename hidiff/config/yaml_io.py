"""YAML loading that refuses duplicate keys and reads 2e-4 as a float.

PyYAML silently keeps the last of two equal keys (the official GoPro_S2.yml
repeats ``param_key_g`` four times) and reads ``2e-4`` as a string; both are
fixed here so an option file means exactly what it says.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from hidiff.errors import ConfigError

_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader + duplicate-key detection + scientific-notation floats."""

    source = "<string>"


_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"{loader.source}: duplicate key '{key}' at line {key_node.start_mark.line + 1} "
                f"(first defined at line {seen[key] + 1}); YAML would silently keep only the last one"
            )
        seen[key] = key_node.start_mark.line
    loader.flatten_mapping(node)
    return {loader.construct_object(k, deep=deep): loader.construct_object(v, deep=deep) for k, v in node.value}


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_text(text: str, source: str = "<string>") -> Any:
    """Parse YAML text strictly; errors name ``source`` and the line."""
    loader = _StrictLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


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


def dump_yaml(data: Any) -> str:
    """Serialise plain data (dicts, lists, scalars) in a stable, readable order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)
