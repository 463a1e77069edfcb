"""What an explanation is: schemas (pydantic, as the results are) and the method names.

A map answers "where in this picture lies the evidence that moved the score towards fake?". It is not
proof that a region was manipulated: a model can be moved by compression, noise or a border as much as by
a blended face, and a real picture still has a map (its evidence was simply too weak to call it fake).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

#: The methods: `gradcam` (Grad-CAM through captum on each expert's last feature stage; needs the torch
#: model) and `occlusion` (gradient-free: grey squares through `engine.predict`, any engine).
METHODS = ("gradcam", "occlusion")
Method = Literal["gradcam", "occlusion"]
MethodChoice = Literal["gradcam", "occlusion", "auto"]
#: Side of the small map carried in JSON.
SMALL_MAP = 32
#: Video frames explained by default: the most suspicious ones.
DEFAULT_EXPLAIN_FRAMES = 3

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
    method: Method = Field(description="what made this map")
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
    method: Method
    method_reason: str = Field(description="why this method was used")
    roster: list[str]
    items: list[ExplainedItem]
    seconds: float = Field(description="time spent explaining")
    note: str = WHAT_A_MAP_IS
