"""Face detectors by name: the factory over the registry in `faces.base`, with the built-in ones loaded."""
from __future__ import annotations

from typing import Any

from mffmoe.errors import ConfigError
from mffmoe.faces import blazeface  # noqa: F401  (registers "blazeface")
from mffmoe.faces.base import _DETECTORS, FaceDetector


def create_detector(name: str, **options: Any) -> FaceDetector:
    """The detector registered as `name`, built with `options`."""
    if name not in _DETECTORS:
        raise ConfigError(f"unknown face detector {name!r}; known: {', '.join(sorted(_DETECTORS))}")
    return _DETECTORS[name](**options)


def list_detectors() -> list[str]:
    return sorted(_DETECTORS)
