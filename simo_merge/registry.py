"""A tiny name -> object registry, one per family (merge methods, datasets, heads, realigners).

Each family lives in one package with one module per entry; modules register themselves with a
decorator. The registry imports its package's modules on first lookup, so adding a method is adding
one file, with no central list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; `package` is scanned for self-registering modules on first use."""

    def __init__(
        self,
        family: str,
        package: str | None = None,
        required_facts: tuple[str, ...] = (),
        derive_facts: Callable[[T], Mapping[str, Any]] | None = None,
    ) -> None:
        self.family = family
        self.package = package
        self.required_facts = required_facts
        self.derive_facts = derive_facts
        self._entries: dict[str, T] = {}
        self._facts: dict[str, dict[str, Any]] = {}
        self._scanned = package is None

    def register(
        self, name: str, facts: Mapping[str, Any] | None = None, **more_facts: Any
    ) -> Callable[[T], T]:
        """Decorator registering ``obj`` as ``name``; ``facts`` (a mapping and/or keywords) are what
        callers may ask of it (e.g. a merge method's ``label`` and sweepable ``scale``), read back with
        :meth:`facts`. The family's ``required_facts`` must all be declared here: callers read them
        instead of inspecting the object. Facts the family's ``derive_facts`` reads off the object (e.g. a
        merge method's parameters) are added once, here, and may not be declared as well."""
        declared = {**(facts or {}), **more_facts}
        missing = [f for f in self.required_facts if f not in declared]
        if missing:
            raise ValueError(f"{self.family} {name!r}: register it with the fact(s) {missing}")

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.family} {name!r} is already registered")
            derived = self.derive_facts(obj) if self.derive_facts else {}
            both = sorted(set(derived) & set(declared))
            if both:
                raise ValueError(
                    f"{self.family} {name!r}: {both} are read off the object; do not declare them"
                )
            self._entries[name] = obj
            if declared or derived:
                self._facts[name] = {**declared, **derived}
            return obj

        return decorator

    def facts(self, name: str) -> dict[str, Any]:
        """The facts ``name`` was registered with (a copy; empty if none were given)."""
        self.get(name)
        return dict(self._facts.get(name, {}))

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def get(self, name: str) -> T:
        self._scan()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise KeyError(f"unknown {self.family} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        self._scan()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._scan()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
