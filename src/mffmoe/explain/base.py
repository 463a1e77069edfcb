"""What an explanation is: the method names and defaults; the schemas live with the results
(`mffmoe.results`: `Explanation`, `ExplainedItem`, `ExpertMap`), since every result may carry one.

A map answers "where in this picture lies the evidence that moved the score towards fake?". It is not
proof that a region was manipulated: a model can be moved by compression, noise or a border as much as by
a blended face, and a real picture still has a map (its evidence was simply too weak to call it fake).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from mffmoe.results import WHAT_A_MAP_IS, ExpertMap, ExplainedItem, ExplainMethod, Explanation

#: The methods: `gradcam` (Grad-CAM through captum on each expert's last feature stage; needs the torch
#: model) and `occlusion` (gradient-free: grey squares through `engine.predict`, any engine).
METHODS = ("gradcam", "occlusion")
Method = ExplainMethod
MethodChoice = Literal["gradcam", "occlusion", "auto"]
#: Side of the small map carried in JSON.
SMALL_MAP = 32
#: Video frames explained by default: the most suspicious ones.
DEFAULT_EXPLAIN_FRAMES = 3

#: The most video frames one explanation takes (each is an ensemble pass or more).
MAX_EXPLAIN_FRAMES = 32


class ExplainOptions(BaseModel):
    """`--explain` and its options, one declaration for the CLI, the jobs API and the Python API."""
    method: MethodChoice = Field("auto", description="gradcam (captum; about one ensemble pass), occlusion "
                                 "(gradient-free, any engine; 26 passes), or auto (Grad-CAM where captum is installed)")
    frames: int = Field(DEFAULT_EXPLAIN_FRAMES, ge=1, le=MAX_EXPLAIN_FRAMES,
                        description="videos: how many of the most suspicious sampled frames to explain")
    experts: bool = Field(False, description="add each expert's own map")
    out_dir: Path | None = Field(None, description="write overlay PNGs here (<input>.<frame|face>[.N].png)")


__all__ = ["DEFAULT_EXPLAIN_FRAMES", "MAX_EXPLAIN_FRAMES", "METHODS", "SMALL_MAP", "WHAT_A_MAP_IS", "ExpertMap",
           "ExplainOptions", "ExplainedItem", "Explanation", "Method", "MethodChoice"]


