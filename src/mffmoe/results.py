"""Result schemas. Field names follow the host contract (clients parse them); ours are additions."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from mffmoe.config import DEFAULT_POOLING, MODEL_NAME

Label = Literal["REAL", "FAKE"]


def label(score: float, threshold: float) -> Label:
    """FAKE iff P(fake) >= threshold, as the host."""
    return "FAKE" if score >= threshold else "REAL"


def confidence(score: float, threshold: float) -> float:
    """The host's confidence: P(fake) if FAKE else 1 - P(fake)."""
    return score if score >= threshold else 1.0 - score


class _Result(BaseModel):
    prediction: Label
    confidence: float = Field(ge=0.0, le=1.0)
    processing_time: float = Field(description="seconds")
    note: str | None = None
    score: float = Field(ge=0.0, le=1.0, description="ensemble P(fake)")
    expert_scores: list[float] = Field(description="P(fake) of each expert, in roster order")
    threshold: float
    untrained: bool = Field(False, description="true when run with random weights (--untrained)")
    model: str = MODEL_NAME
    experts_run: int | None = Field(None, description="set by --early-exit: how many experts ran")
    score_interval: tuple[float, float] | None = Field(
        None, description="set by --early-exit: the range the full ensemble score must lie in")


class ImageAnalysisResult(_Result):
    media_type: Literal["image"] = "image"
    dimensions: dict[str, int]


class FramePrediction(BaseModel):
    index: int = Field(description="0-based sample number, as the host")
    frame_index: int = Field(description="frame number in the stream")
    timestamp: float = Field(description="seconds from the stream start")
    score: float
    prediction: Label
    expert_scores: list[float] | None = None


class FrameFailure(BaseModel):
    frame_index: int
    timestamp: float
    error: str


class VideoAnalysisResult(_Result):
    media_type: Literal["video"] = "video"
    dimensions: dict[str, int]
    frame_count: int | None = Field(None, description="frames in the stream (true count when known)")
    frames_analyzed: int
    frames_failed: int = 0
    failed_frames: list[FrameFailure] = Field(default_factory=list)
    frame_predictions: list[FramePrediction]
    fps: float | None = None
    duration: float | None = None
    pooling: str = DEFAULT_POOLING
    metrics: dict[str, Any]


AnalysisResult = ImageAnalysisResult | VideoAnalysisResult
