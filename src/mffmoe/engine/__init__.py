"""Inference engines: a batch of preprocessed images in, per-expert P(fake) out (`base.Engine`), created
by name from a registry (`registry.py`; `auto` picks one, see `auto.py`).

Kept import-light on purpose (engines, torch models and timm load on first use): the CLI imports this
package at start-up, and `analyze` must be able to trim imports before timm comes in (see `memory.py`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mffmoe._util.lazy import lazy_exports

if TYPE_CHECKING:
    from mffmoe.engine.base import Engine
    from mffmoe.engine.registry import ALIASES, ENGINES, create_engine

__getattr__, __dir__ = lazy_exports(__name__, {
    "Engine": "mffmoe.engine.base",
    "ALIASES": "mffmoe.engine.registry",
    "ENGINES": "mffmoe.engine.registry",
    "create_engine": "mffmoe.engine.registry",
})
__all__ = ["ALIASES", "ENGINES", "Engine", "create_engine"]
