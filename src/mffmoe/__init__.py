"""mffmoe: the MFF-MoE V1 deepfake detector (seven timm experts, EMA weights, averaged P(fake)).

Attributes are imported lazily so that `mffmoe --help` and light submodules do not pay for torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_ROSTER": "mffmoe.config",
    "MFFMoEV1Config": "mffmoe.config",
    "Detector": "mffmoe.detector",
    "MFFMoEDetectorV1": "mffmoe.detector",
    "MFFMoEError": "mffmoe.errors",
    "ExponentialMovingAverage": "mffmoe.model.ema",
    "FramePrediction": "mffmoe.results",
    "ImageAnalysisResult": "mffmoe.results",
    "VideoAnalysisResult": "mffmoe.results",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mffmoe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
