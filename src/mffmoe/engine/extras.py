"""Optional dependencies of the exported engines (the `engines` extra): a missing one is a typed
`MissingExtraError` that says what to install, never a bare ImportError from deep inside an export."""
from __future__ import annotations

import importlib
from types import ModuleType

from mffmoe.errors import MissingExtraError

INSTALL = "pip install 'mffmoe[engines]'"


def import_extra(module: str, needed_for: str) -> ModuleType:
    """`import module`, or a MissingExtraError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(f"{needed_for} needs {module}, which is not installed ({e}): {INSTALL}") from e
