"""Name -> class registries, one per kind of component (BasicSR style).

A YAML block such as ``{type: Transformer, dim: 48}`` is turned into an object by
looking ``type`` up in the registry of its kind.  Unlike BasicSR, an unknown name
fails with the full list of registered names and a 'did you mean' hint.  A
registry may also accept other spellings of a name (``alias``), such as BasicSR's
metric names; they resolve to the registered name.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional, TypeVar

from hidiff.errors import RegistryError
from hidiff.utils.suggest import did_you_mean

T = TypeVar("T")


class Registry:
    """A mapping from names to classes or functions of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, object] = {}
        self._aliases: Dict[str, str] = {}

    def register(self, name: Optional[str] = None) -> Callable[[T], T]:
        """Decorator: register an object under ``name`` (default: its __name__)."""

        def deco(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._items and self._items[key] is not obj:
                raise RegistryError(f"{self.kind} registry: the name '{key}' is already registered")
            self._items[key] = obj
            return obj

        return deco

    def alias(self, name: str, target: str) -> None:
        """Accept ``name`` as another spelling of the registered ``target``."""
        if target not in self._items:
            raise RegistryError(f"{self.kind} registry: alias '{name}' names the unregistered '{target}'")
        if name in self._items or self._aliases.get(name, target) != target:
            raise RegistryError(f"{self.kind} registry: the name '{name}' is already taken")
        self._aliases[name] = target

    def canonical(self, name: str) -> str:
        """The registered name ``name`` stands for (itself, or the target of an alias)."""
        self.get(name)
        return self._aliases.get(name, name)

    def get(self, name: str) -> object:
        """Return the object registered as ``name`` (or an alias of it) or fail listing the known names."""
        name = self._aliases.get(name, name) if isinstance(name, str) else name
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise RegistryError(
                f"unknown {self.kind} type {name!r}{did_you_mean(str(name), [*self._items, *self._aliases])}; "
                f"registered {self.kind} types: {known}"
            )
        return self._items[name]

    def aliases(self) -> Dict[str, str]:
        """Alias -> registered name."""
        return dict(self._aliases)

    def names(self) -> list:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


ARCH_REGISTRY = Registry("arch")
MODEL_REGISTRY = Registry("model")
DATASET_REGISTRY = Registry("dataset")
LOSS_REGISTRY = Registry("loss")
METRIC_REGISTRY = Registry("metric")
