"""Named, versioned component registries (spaCy-style): pick components by name from config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from diancang.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: its name, version and factory."""

    name: str
    version: int
    factory: T


class Registry(Generic[T]):
    """A table of named components, e.g. ``strategies.get("finetune")``.

    Registration happens when the defining module is imported; :meth:`get` imports the package's
    built-in modules lazily (``builtins``), so nothing heavy runs at ``import diancang``.
    """

    def __init__(self, kind: str, builtins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._builtins = builtins
        self._loaded = False

    def register(self, name: str, version: int = 1) -> Callable[[T], T]:
        """Decorator: register ``factory`` under ``name`` (one name, one component)."""

        def deco(factory: T) -> T:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, version, factory)
            return factory

        return deco

    def _load_builtins(self) -> None:
        if not self._loaded:
            import importlib

            for module in self._builtins:
                importlib.import_module(module)
            self._loaded = True

    def entry(self, name: str) -> Entry[T]:
        """The entry registered as ``name``; a clear error lists the known names otherwise."""
        self._load_builtins()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ConfigError(
                f"unknown {self.kind} {name!r} (known: {known})",
                fix=f"use one of the registered {self.kind} names",
            )
        return self._entries[name]

    def get(self, name: str) -> T:
        """The factory registered as ``name``."""
        return self.entry(name).factory

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load_builtins()
        return sorted(self._entries)
