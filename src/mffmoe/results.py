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


Crop = Literal["frame", "faces"]
Assessment = Literal["likely_real", "uncertain", "likely_fake"]


class Agreement(BaseModel):
    """How far the experts agree (rules: `mffmoe.inference.trust`, docs/trust.md). `prediction` stays the
    host's REAL/FAKE; `assessment` says whether that call is clear or should be looked at."""
    expert_scores: list[float] = Field(description="the P(fake) the votes are counted on, in roster order "
                                       "(videos and persons: each expert's frame scores pooled as the score is)")
    std: float = Field(description="population standard deviation of expert_scores")
    min: float
    max: float
    fake_votes: int = Field(description="experts with P(fake) >= threshold")
    real_votes: int = Field(description="experts with P(fake) < threshold")
    assessment: Assessment = Field(description="likely_real | uncertain | likely_fake")
    reasons: list[str] = Field(default_factory=list, description="why uncertain: near_threshold, "
                               "experts_split, experts_spread (empty otherwise)")


class FaceResult(BaseModel):
    """One face scored through the ensemble (faces mode)."""
    box: list[float] = Field(description="the detector's face box [left, top, right, bottom], pixels")
    detector_score: float = Field(description="the face detector's confidence")
    crop_box: list[int] = Field(description="the square scored [left, top, right, bottom]; may leave the "
                                "frame (padded black)")
    score: float = Field(ge=0.0, le=1.0, description="ensemble P(fake) of this face")
    expert_scores: list[float]
    prediction: Label
    person: int | None = Field(None, description="videos: the person this face belongs to")
    calibrated_score: float | None = Field(default=None, ge=0.0, le=1.0, description="the result's "
                                           "calibration applied to this face's scores")
    agreement: Agreement | None = None


class TimelinePoint(BaseModel):
    index: int = Field(description="the sample number (as in frame_predictions)")
    frame_index: int
    timestamp: float
    score: float


class PersonResult(BaseModel):
    """A person followed across a video's sampled frames."""
    person: int
    score: float = Field(ge=0.0, le=1.0, description="the person's face scores, pooled with the video's pooling")
    prediction: Label
    calibrated_score: float | None = Field(default=None, ge=0.0, le=1.0, description="the result's calibration "
                                           "applied to `score` (mean fusion only: a person has no expert scores)")
    frames: int = Field(description="sampled frames the person was seen in")
    counted: bool = Field(description="seen in enough frames to count towards the video's score")
    timeline: list[TimelinePoint]
    face: FaceResult = Field(description="the representative face (the detector's surest)")
    face_frame_index: int
    thumbnail: str = Field(description="the representative face crop, a data: URI (JPEG)")
    agreement: Agreement | None = None


class CalibrationUse(BaseModel):
    """The calibration found next to the weights (`mffmoe calibrate`), and whether this result used it."""
    name: str | None = Field(default=None, description="method (+learned fusion), fit date, data hash prefix")
    method: str | None = None
    fusion: str | None = Field(default=None, description="mean: the spec's score was calibrated; learned: the "
                               "experts' stacked logits")
    crop: str | None = Field(default=None, description="the crop mode it was fitted in")
    applied: bool = Field(description="false when it does not fit this call (see note)")
    note: str | None = Field(default=None, description="why it was not applied")


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
    crop: Crop = Field("frame", description="what was scored: the whole frame (the spec's input) or face crops")
    in_scope: bool | None = Field(None, description="false when a scope_reasons entry applies (faces/auto: also "
                                  "when no face was found and the whole frame was scored); true in faces/auto "
                                  "mode otherwise; null in frame mode otherwise (face presence is not checked)")
    faces: list[FaceResult] | None = Field(None, description="images: the faces scored (faces mode)")
    calibrated_score: float | None = Field(None, ge=0.0, le=1.0, description="P(fake) after the weights' "
                                           "calibration (`calibration`); `score` stays the spec's number")
    calibration: CalibrationUse | None = Field(None, description="the calibration next to the weights, if any")
    agreement: Agreement | None = Field(None, description="the experts' agreement and the assessment")
    scope_reasons: list[str] = Field(default_factory=list, description="what makes this input one the model is "
                                     "known not to handle (no_face, tiny_input, upscaled, extreme_aspect, "
                                     "heavy_jpeg, few_frames); in_scope is false when any is listed")


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
    faces: list[FaceResult] | None = Field(default=None, description="faces mode: this frame's faces")
    calibrated_score: float | None = Field(default=None, ge=0.0, le=1.0, description="the result's "
                                           "calibration applied to this frame's scores")
    agreement: Agreement | None = None


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
    persons: list[PersonResult] | None = Field(None, description="faces mode: the persons seen")


AnalysisResult = ImageAnalysisResult | VideoAnalysisResult
