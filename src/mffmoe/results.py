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


ExplainMethod = Literal["gradcam", "occlusion"]
#: What a map is (said with every explanation, on the page, in the CLI help and the docs).
WHAT_A_MAP_IS = ("A map shows where the evidence that moved the score lies, not proof that a region was "
                 "manipulated.")


class ExpertMap(BaseModel):
    """One expert's map (`--explain-experts`)."""
    expert: str = Field(description="the expert's timm name")
    score: float = Field(description="the expert's P(fake) for this input")
    weight: float = Field(description="its weight in the ensemble map")
    map: list[list[float]] = Field(description="small map, rows top to bottom, values in [0, 1]")


class ExplainedItem(BaseModel):
    """One explained input: a whole frame or a face crop, of an image or of a video frame."""
    kind: Literal["frame", "face"]
    face: int | None = Field(None, description="faces: the face's index in the result's list")
    frame_index: int | None = Field(None, description="videos: the frame number in the stream")
    timestamp: float | None = Field(None, description="videos: seconds from the stream start")
    method: ExplainMethod = Field(description="what made this map")
    score: float = Field(description="the ensemble P(fake) of this input, as the result reported it")
    box: list[int] = Field(description="the region the model saw, [left, top, right, bottom] in original "
                           "pixels (faces: the crop square, which may leave the picture)")
    map: list[list[float]] = Field(description="the ensemble map over `box`, small (rows top to bottom), "
                                   "values in [0, 1] (1: the strongest evidence for fake in this input)")
    peak: list[int] | None = Field(description="[x, y] of the map's maximum in original pixels, inside the "
                                   "picture; null when the map is zero everywhere (no evidence found)")
    weights: list[float] = Field(description="each expert's weight in the ensemble map, roster order "
                                 "(its share of the summed P(fake))")
    experts: list[ExpertMap] | None = Field(None, description="per-expert maps, when asked for")
    overlay: str | None = Field(None, description="the overlay PNG written, when an output folder was given")


class Explanation(BaseModel):
    """The explanation of one result."""
    path: str
    media_type: Literal["image", "video"]
    width: int = Field(description="the original picture's width (pixels)")
    height: int
    method: ExplainMethod
    method_reason: str = Field(description="why this method was used")
    roster: list[str]
    items: list[ExplainedItem]
    seconds: float = Field(description="time spent explaining")
    note: str = WHAT_A_MAP_IS


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
    provenance: dict[str, Any] | None = Field(None, description="what the file says about itself (C2PA manifest, "
                                              "EXIF, XMP/IPTC DigitalSourceType, PNG text, container tags): "
                                              "`mffmoe.provenance.Provenance` as JSON; evidence beside `score`, "
                                              "never folded into it. `claims_ai` true when metadata claims AI "
                                              "generation; `found` false reads \"no provenance found\", which "
                                              "is not evidence of authenticity")
    explanation: Explanation | None = Field(None, description="--explain: where the evidence that moved the "
                                            "score lies (maps of the image, its faces or the most suspicious "
                                            "frames); not proof that a region was manipulated")


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
