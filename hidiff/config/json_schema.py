"""The JSON Schema (draft 2020-12) of option files, generated from the typed schema.

Editors that speak the YAML language server check an option file as it is typed
when its first line is ``# yaml-language-server: $schema=hidiff.schema.json``.
Everything comes from the declarations the loader itself uses: the dataclass
fields of ``hidiff.config.schema`` (types, ``spec`` descriptions and ranges,
``Literal`` choices), the registries (component names as enums) and the
signatures of the registered components (their keyword options, with the
descriptions of their docstrings' ``Args:`` sections).  Keys the loader rejects
are rejected here too (``additionalProperties``/``unevaluatedProperties: false``).
The loader stays the authority: it also checks what a schema cannot say (files
on disk, sums, sizes the networks need).

``python scripts/schema.py -o options/hidiff.schema.json`` regenerates the
shipped file (``hidiff-schema`` once installed).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Union, get_args, get_origin

from hidiff.config import registries
from hidiff.config.schema import (FOLDER_NAME_PATTERN, LOADER_KEYS, TRAIN_LOADER_KEYS, Block, DatasetOptions,
                                  Options, PathOptions, ValOptions)
from hidiff.config.typed import _MAPPINGS, _SEQUENCES, type_hints
from hidiff.inference.tiler import BLENDS, MODES, PRIORS, TileOptions
from hidiff.utils.atomic import atomic_write_text

_RANGE_KEYS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def _summary(doc: Optional[str]) -> str:
    """The first paragraph of a docstring, on one line."""
    if not doc:
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def _args_section(component: Any) -> Dict[str, str]:
    """``{name: description}`` from the ``Args:`` section of a class or function docstring."""
    doc = inspect.getdoc(component) or ""
    m = re.search(r"^Args:\n((?:[ \t]+.*\n?|\n)*)", doc, re.M)
    if not m:
        return {}
    out: Dict[str, str] = {}
    current: List[str] = []
    for line in m.group(1).splitlines():
        head = re.match(r"^ {4}([\w, ]+):\s*(.*)$", line)
        if head:
            current = [n.strip() for n in head.group(1).split(",")]
            for n in current:
                out[n] = head.group(2).strip()
        elif line.startswith("      ") and current:
            for n in current:
                out[n] = f"{out[n]} {line.strip()}".strip()
    return out


def _json_value(value: Any) -> Any:
    """``value`` as JSON data, or raise TypeError (then no default is shown)."""
    if isinstance(value, tuple):
        value = list(value)
    json.dumps(value)
    return value


def _with_range(schema: Dict[str, Any], meta: Mapping[str, Any]) -> Dict[str, Any]:
    """Add the numeric range of ``meta`` to every number in ``schema`` (items and values too)."""
    if schema.get("type") in ("integer", "number"):
        for key, word in _RANGE_KEYS.items():
            if key in meta:
                schema[word] = meta[key]
    for sub in schema.get("anyOf", []):
        _with_range(sub, meta)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _with_range(schema[key], meta)
    for sub in schema.get("prefixItems", []):
        _with_range(sub, meta)
    return schema


class _Generator:
    def __init__(self) -> None:
        self.defs: Dict[str, Any] = {}

    # ---------------------------------------------------------------- types
    def type_schema(self, tp: Any) -> Dict[str, Any]:
        if tp is Any:
            return {}
        if tp is type(None):
            return {"type": "null"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            return {"type": "string"}
        if tp in _MAPPINGS:
            return {"type": "object"}
        if tp in _SEQUENCES:
            return {"type": "array"}
        origin = get_origin(tp)
        if origin is Literal:
            return {"enum": list(get_args(tp))}
        if origin in (Union, types.UnionType):
            subs = [self.type_schema(a) for a in get_args(tp)]
            return subs[0] if len(subs) == 1 else {"anyOf": subs}
        if origin in _SEQUENCES:
            args = get_args(tp)
            if origin is tuple and args and args[-1] is not Ellipsis:
                items = [self.type_schema(a) for a in args]
                return {"type": "array", "prefixItems": items, "items": False,
                        "minItems": len(items), "maxItems": len(items)}
            return {"type": "array", "items": self.type_schema(args[0]) if args else {}}
        if origin in _MAPPINGS:
            args = get_args(tp)
            return {"type": "object", "additionalProperties": self.type_schema(args[1]) if args else {}}
        if isinstance(tp, type) and issubclass(tp, Block):
            raise TypeError("blocks are described through their field's registry")
        if dataclasses.is_dataclass(tp):
            return self.ref(tp)
        raise TypeError(f"no JSON Schema for {tp!r}")

    def ref(self, cls: type) -> Dict[str, Any]:
        if cls.__name__ not in self.defs:
            self.defs[cls.__name__] = {}  # placeholder against recursion
            self.defs[cls.__name__] = self.dataclass_schema(cls)
        return {"$ref": f"#/$defs/{cls.__name__}"}

    def field_schema(self, cls: type, f: dataclasses.Field, hint: Any) -> Dict[str, Any]:
        kind = f.metadata.get("registry")
        inner = hint
        nullable = get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)
        if nullable:
            rest = [a for a in get_args(hint) if a is not type(None)]
            inner = rest[0] if len(rest) == 1 else Union[tuple(rest)]
        if kind is not None and isinstance(inner, type) and issubclass(inner, Block):
            schema = self.block_ref(kind)
        elif kind is not None:
            schema = {"enum": registries.names(kind)}
        elif cls is ValOptions and f.name == "tile":
            schema = {"anyOf": [self.tile_ref(), {"const": False}]}
        else:
            schema = self.type_schema(inner)
        schema = _with_range(schema, f.metadata)
        if nullable:
            schema = {"anyOf": [schema, {"type": "null"}]}
        if f.metadata.get("doc"):
            schema = {"description": f.metadata["doc"], **schema}
        if f.default is not dataclasses.MISSING:
            try:
                schema["default"] = _json_value(f.default)
            except TypeError:
                pass
        return schema

    def dataclass_schema(self, cls: type, skip: tuple = ()) -> Dict[str, Any]:
        hints = type_hints(cls)
        props: Dict[str, Any] = {}
        required = []
        for f in dataclasses.fields(cls):
            if not f.init or f.name in skip:
                continue
            props[f.name] = self.field_schema(cls, f, hints[f.name])
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        for alias, target in getattr(cls, "_aliases", {}).items():
            props[alias] = {**props[target], "description": f"another name of {target}"}
        out: Dict[str, Any] = {"type": "object", "description": _summary(cls.__doc__), "properties": props}
        if required:
            out["required"] = required
        out["additionalProperties"] = False
        return out

    # --------------------------------------------------------------- blocks
    def kwargs_schema(self, kind: str, component: Any, skip=()) -> Dict[str, Any]:
        """The keyword options of one component (``{}`` schema where it takes ``**kwargs``)."""
        options = registries.keyword_options(kind, component)
        if not options:
            return {"additionalProperties": True}
        docs = _args_section(component)
        ranges = registries.KWARG_RANGES.get(kind, {})
        choices = registries.KWARG_CHOICES.get(kind, {})
        props: Dict[str, Any] = {}
        required = []
        for name, (hint, default) in options.items():
            if name in skip:
                continue
            try:
                schema = self.type_schema(hint)
            except TypeError:
                schema = {}
            schema = _with_range(schema, ranges.get(name, {}))
            if name in choices:
                schema = {"enum": list(choices[name])}
            if docs.get(name):
                schema = {"description": docs[name], **schema}
            if default is inspect.Parameter.empty:
                required.append(name)
            else:
                try:
                    schema["default"] = _json_value(default)
                except TypeError:
                    pass
            props[name] = schema
        out: Dict[str, Any] = {"properties": props}
        if required:
            out["required"] = required
        return out

    def by_type(self, kind: str, skip=()) -> List[Dict[str, Any]]:
        """One ``if type == X then <X's keyword options>`` per component of ``kind``."""
        rules = []
        for name in registries.names(kind):
            component = registries.lookup(kind, name, kind)
            then = self.kwargs_schema(kind, component, skip)
            doc = _summary(getattr(component, "__doc__", None))
            rules.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                          "then": {"description": doc, **then} if doc else then})
        return rules

    def block_ref(self, kind: str) -> Dict[str, Any]:
        key = f"{kind}_block"
        if key not in self.defs and kind == "optimizer":
            self.defs[key] = self.optimizer_block()
        if key not in self.defs:
            self.defs[key] = {
                "type": "object",
                "description": f"a {kind}: its name in 'type' and its keyword options",
                "properties": {"type": {"enum": registries.names(kind)}},
                "required": ["type"],
                "allOf": self.by_type(kind),
                "unevaluatedProperties": False,
            }
        return {"$ref": f"#/$defs/{key}"}

    def optimizer_block(self) -> Dict[str, Any]:
        """Optimisers are torch's: their names and keywords vary with the torch version, so the
        schema describes the common keywords and leaves the rest to the loader."""
        ranges = registries.KWARG_RANGES["optimizer"]
        props = {"type": {"type": "string", "description": "a torch.optim optimiser class, e.g. AdamW"}}
        for name, hint in registries.OPTIMIZER_HINTS.items():
            props[name] = _with_range(self.type_schema(hint), ranges.get(name, {}))
        return {"type": "object", "description": "the optimiser: a torch.optim class in 'type' and its options",
                "properties": props, "required": ["type"]}

    def tile_ref(self) -> Dict[str, Any]:
        if "TileOptions" not in self.defs:
            schema = self.dataclass_schema(TileOptions)
            for name, choices in (("blend", BLENDS), ("mode", MODES), ("prior", PRIORS)):
                schema["properties"][name]["enum"] = list(choices)
                del schema["properties"][name]["type"]
            for name, low in (("size", 1), ("batch", 1), ("stride", 1), ("overlap", 0)):
                _with_range(schema["properties"][name], {"ge": low})
            self.defs["TileOptions"] = schema
        return {"$ref": "#/$defs/TileOptions"}

    # -------------------------------------------------------------- sections
    def dataset(self) -> Dict[str, Any]:
        schema = self.dataclass_schema(DatasetOptions, skip=("phase", "params"))
        schema.pop("additionalProperties")
        schema["properties"]["type"] = {"description": "dataset class", "enum": registries.names("dataset")}
        schema["properties"]["name"]["pattern"] = FOLDER_NAME_PATTERN
        schema["properties"]["use_hflip"] = schema["properties"]["use_rot"] = False
        schema["allOf"] = self.by_type("dataset", skip=tuple(LOADER_KEYS))
        schema["unevaluatedProperties"] = False
        return schema

    def eval_set(self) -> Dict[str, Any]:
        """A val/test set: the training loader's keys only at their defaults (what a saved config lists)."""
        defaults = {f.name: f.default for f in dataclasses.fields(DatasetOptions)}
        return {"properties": {k: {"const": defaults[k]} for k in TRAIN_LOADER_KEYS}}

    def path(self) -> Dict[str, Any]:
        schema = self.dataclass_schema(PathOptions, skip=tuple(PathOptions.PER_NETWORK.values()))
        hints = type_hints(PathOptions)
        fields = {f.name: f for f in dataclasses.fields(PathOptions)}
        schema["patternProperties"] = {}
        for prefix, name in PathOptions.PER_NETWORK.items():
            value = self.type_schema(get_args(hints[name])[1])
            schema["patternProperties"][rf"^{prefix}_\w+$"] = {"description": fields[name].metadata["doc"],
                                                                **value}
        return schema

    def options(self) -> Dict[str, Any]:
        top = self.dataclass_schema(Options, skip=("datasets", "networks", "source", "path"))
        props = top["properties"]
        props["name"]["pattern"] = FOLDER_NAME_PATTERN
        props["is_train"] = {"description": "train (true) or test (false): set by the command; a file may only repeat it",
                             "type": "boolean"}
        props["path"] = {"description": "weights, resume, output roots and the stage-1 link", "$ref": "#/$defs/path"}
        props["datasets"] = {
            "description": "the data sets: train, val[_<n>], test_<n>",
            "type": "object",
            "patternProperties": {Options.DATASET_KEY: {"$ref": "#/$defs/dataset"},
                                  r"^(val|test)(_\w+)?$": self.eval_set()},
            "additionalProperties": False,
        }
        top["patternProperties"] = {r"^network_\w+$": self.block_ref("arch")}
        self.defs["dataset"] = self.dataset()
        self.defs["path"] = self.path()
        return top


def build_schema() -> Dict[str, Any]:
    """The JSON Schema of hidiff option files."""
    gen = _Generator()
    top = gen.options()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "hidiff option file", **top,
            "$defs": dict(sorted(gen.defs.items()))}


def schema_text() -> str:
    return json.dumps(build_schema(), indent=1, sort_keys=False) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="hidiff-schema", description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", metavar="PATH",
                        help="write the schema here (e.g. options/hidiff.schema.json); default: standard output")
    args = parser.parse_args(argv)
    text = schema_text()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    atomic_write_text(Path(args.output), text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
