"""mffmoe: the MFF-MoE V1 deepfake detector (seven timm experts, EMA weights, averaged P(fake))."""
from mffmoe.config import DEFAULT_ROSTER, MFFMoEV1Config
from mffmoe.detector import Detector, MFFMoEDetectorV1
from mffmoe.errors import MFFMoEError
from mffmoe.model.ema import ExponentialMovingAverage
from mffmoe.results import FramePrediction, ImageAnalysisResult, VideoAnalysisResult

__version__ = "0.1.0"
__all__ = ["DEFAULT_ROSTER", "Detector", "ExponentialMovingAverage", "FramePrediction", "ImageAnalysisResult",
           "MFFMoEDetectorV1", "MFFMoEError", "MFFMoEV1Config", "VideoAnalysisResult", "__version__"]
