"""PEP 562 lazy exports: a package names what it offers without importing torch, FastAPI or Ray until
an attribute is used (so `mffmoe --help` and light submodules stay fast)."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`exports` maps attribute -> module; returns the package's `__getattr__` and `__dir__`."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
