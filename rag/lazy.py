"""A package's public names, imported from their modules on first use."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_names(package: str, names: dict[str, str]) -> tuple[Callable, Callable]:
    """`__getattr__` and `__dir__` for a package exposing `names` (name -> module)."""

    def __getattr__(name: str):
        if name in names:
            return getattr(import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
