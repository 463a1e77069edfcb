"""mffmoe: the MFF-MoE V1 deepfake detector (seven timm experts, EMA weights, averaged P(fake)).

Attributes are imported lazily so that `mffmoe --help` and light submodules do not pay for torch.
"""
from __future__ import annotations

from mffmoe._util.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_ROSTER": "mffmoe.config",
    "DetectorConfig": "mffmoe.config",
    "MFFMoEV1Config": "mffmoe.config",
    "Detector": "mffmoe.inference.detector",
    "MFFMoEDetectorV1": "mffmoe.inference.host",
    "ErrorInfo": "mffmoe.errors",
    "MFFMoEError": "mffmoe.errors",
    "ExponentialMovingAverage": "mffmoe.model.ema",
    "ExplainOptions": "mffmoe.explain.base",
    "explained": "mffmoe.explain.explainer",
    "Explanation": "mffmoe.results",
    "FramePrediction": "mffmoe.results",
    "ImageAnalysisResult": "mffmoe.results",
    "VideoAnalysisResult": "mffmoe.results",
}
__all__ = [*_EXPORTS, "__version__"]

__getattr__, _dir = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
