"""How much to trust a result: the experts' agreement, and whether the input is in scope.

One place for both, used by every path that builds results (`Detector`, videos in faces mode, scans,
hence the server), so they agree. Details and reasoning: docs/trust.md.

Agreement (`agreement`), on the experts' P(fake) `p` (the experts that ran, under early exit) and the
result's `score`, at `threshold`:

- `fake_votes` / `real_votes`: experts with p >= threshold / p < threshold (the host's FAKE rule).
- `std` (population), `min`, `max` of p.
- `assessment` is `uncertain` when any of these holds (its codes go to `reasons`):
  - `near_threshold`: |score - threshold| < NEAR_MARGIN (0.15; at threshold 0.5, a host confidence
    under 0.65);
  - `experts_split`: the minority side holds more than SPLIT_SHARE (1/4) of the experts (2 or more of
    the 7; with 2 experts, any 1-1 split);
  - `experts_spread`: std > SPREAD_STD (0.35): scores spread over most of [0, 1]. One dissenter among
    seven cannot reach it (6 at 1.0 and 1 at 0.0 give sqrt(6)/7 = 0.3499), so a lone dissenter is
    tolerated, as by the split rule; it catches spread the votes do not show (a threshold away from 0.5,
    whose one side is wide; small rosters);
  else `likely_fake` when score >= threshold, `likely_real` otherwise. `prediction` is never changed.

For a video (and a person) the experts' p are each expert's frame (face) scores pooled with the video's
pooling, as its score is pooled; a frame's and a face's are their own row.

Out of scope (`scope_reasons`; `in_scope` false when any applies; each also adds a sentence to `note`):

- `no_face` (faces/auto mode): no face found, the whole frame was scored (`assemble.out_of_scope`);
- `tiny_input`: the input's shorter side is under TINY_SIDE (64 px);
- `upscaled`: what was scored (the whole frame: its shorter side; a face: its crop's side) is enlarged
  more than UPSCALE_FACTOR (4x) to the model's input (512: under 128 px); implied by `tiny_input`, so
  only one of the two is listed;
- `extreme_aspect` (the whole frame scored): longer / shorter side over ASPECT_RATIO (3): the frame is
  squeezed to a square;
- `heavy_jpeg` (images): JPEG quality, estimated from the quantisation tables
  (`media.image.jpeg_quality`), under JPEG_QUALITY (50);
- `few_frames` (videos): fewer than MIN_FRAMES (3) sampled frames decoded, or fewer than
  MIN_FRAME_SHARE (half) of those sampled.

`in_scope` without a reason keeps its meaning: true in faces/auto mode (faces scored), null in frame mode
(whether there is a face is not checked there).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from mffmoe.pooling import Pooling
from mffmoe.results import (
    Agreement,
    Assessment,
    FaceResult,
    ImageAnalysisResult,
    VideoAnalysisResult,
)

R = TypeVar("R", ImageAnalysisResult, VideoAnalysisResult)

# -- agreement ---------------------------------------------------------------------------------------
NEAR_MARGIN = 0.15
SPLIT_SHARE = 0.25
SPREAD_STD = 0.35


def assess(score: float, experts: Sequence[float], threshold: float) -> tuple[Assessment, list[str]]:
    """The assessment of `score` given its experts' P(fake), and why it is uncertain (if it is)."""
    p = np.asarray([v for v in experts if not np.isnan(v)], dtype=np.float64)
    reasons = []
    if abs(score - threshold) < NEAR_MARGIN:
        reasons.append("near_threshold")
    if len(p):
        fake = int(np.sum(p >= threshold))
        if min(fake, len(p) - fake) / len(p) > SPLIT_SHARE:
            reasons.append("experts_split")
        if float(np.std(p)) > SPREAD_STD:
            reasons.append("experts_spread")
    if reasons:
        return "uncertain", reasons
    return ("likely_fake" if score >= threshold else "likely_real"), []


def agreement(experts: Sequence[float] | np.ndarray, score: float, threshold: float) -> Agreement:
    """The agreement block of a result whose experts gave `experts` (NaN: did not run) and whose score is
    `score`."""
    p = [float(v) for v in np.asarray(experts, dtype=np.float64).ravel() if not np.isnan(v)]
    arr = np.asarray(p if p else [score], dtype=np.float64)
    fake = sum(1 for v in p if v >= threshold)
    assessment, reasons = assess(score, p, threshold)
    return Agreement(expert_scores=p, std=float(np.std(arr)), min=float(arr.min()), max=float(arr.max()),
                     fake_votes=fake, real_votes=len(p) - fake, assessment=assessment, reasons=reasons)


def pooled_experts(rows: np.ndarray, pool: Pooling) -> np.ndarray:
    """Each expert's scores over the rows [N, E] (frames, or a person's faces) pooled with `pool`, as
    the score is; experts missing (NaN) from any row are dropped."""
    rows = np.asarray(rows, dtype=np.float64)
    ran = [e for e in range(rows.shape[1]) if not np.isnan(rows[:, e]).any()]
    return np.asarray([float(np.clip(pool(rows[:, e]), 0.0, 1.0)) for e in ran], dtype=np.float64)


# -- scope -------------------------------------------------------------------------------------------
TINY_SIDE = 64
UPSCALE_FACTOR = 4.0
ASPECT_RATIO = 3.0
JPEG_QUALITY = 50
MIN_FRAMES = 3
MIN_FRAME_SHARE = 0.5

#: Every reason code, in the order they are listed.
REASONS = ("no_face", "tiny_input", "upscaled", "extreme_aspect", "heavy_jpeg", "few_frames")


@dataclass(frozen=True)
class Reason:
    code: str
    note: str


def scope_reasons(result: ImageAnalysisResult | VideoAnalysisResult, input_size: int,
                  jpeg_quality: int | None = None) -> list[Reason]:
    """The scope reasons `result` (finished, in any mode) raises, besides `no_face` (judged where faces
    are looked for). `input_size`: the model's input side; `jpeg_quality`: an image's estimated JPEG
    quality (None: not a JPEG, or not known)."""
    out = []
    w, h = int(result.dimensions.get("width", 0)), int(result.dimensions.get("height", 0))
    short, long = min(w, h), max(w, h)
    if 0 < short < TINY_SIDE:
        out.append(Reason("tiny_input", f"tiny input: {w}x{h}, its shorter side under {TINY_SIDE} px"))
    elif result.crop == "frame" and short > 0 and input_size / short > UPSCALE_FACTOR:
        out.append(Reason("upscaled", f"upscaled: the frame's {short} px side is enlarged "
                                      f"{input_size / short:.1f}x to {input_size} px (over {UPSCALE_FACTOR:g}x)"))
    elif result.crop == "faces":
        side = _face_side(result)
        if side is not None and side > 0 and input_size / side > UPSCALE_FACTOR:
            out.append(Reason("upscaled", f"upscaled: the scored face crop ({side:.0f} px) is enlarged "
                                          f"{input_size / side:.1f}x to {input_size} px (over {UPSCALE_FACTOR:g}x)"))
    if result.crop == "frame" and short > 0 and long / short > ASPECT_RATIO:
        out.append(Reason("extreme_aspect", f"extreme aspect ratio {long / short:.1f}:1 (over {ASPECT_RATIO:g}:1): "
                                            "the frame is squeezed to a square"))
    if jpeg_quality is not None and jpeg_quality < JPEG_QUALITY:
        out.append(Reason("heavy_jpeg", f"heavy JPEG compression: estimated quality {jpeg_quality} "
                                        f"(under {JPEG_QUALITY})"))
    if isinstance(result, VideoAnalysisResult):
        decoded, sampled = result.frames_analyzed, result.frames_analyzed + result.frames_failed
        if decoded < MIN_FRAMES or decoded < MIN_FRAME_SHARE * sampled:
            out.append(Reason("few_frames", f"too few decodable frames: {decoded} of {sampled} sampled "
                                            f"(at least {MIN_FRAMES} and half are wanted)"))
    return out


def judge_scope(result: R, input_size: int, jpeg_quality: int | None = None) -> R:
    """`result` with its scope reasons added (`scope_reasons`, `in_scope` false, a sentence each in
    `note`); unchanged when none applies. Idempotent."""
    found: list[Reason] = [x for x in scope_reasons(result, input_size, jpeg_quality)
                           if x.code not in result.scope_reasons]
    if not found:
        return result
    codes = set(result.scope_reasons) | {r.code for r in found}
    note = "; ".join(x for x in (result.note, *(r.note for r in found)) if x)
    return result.model_copy(update={"scope_reasons": [c for c in REASONS if c in codes], "in_scope": False,
                                     "note": note})


def _crop_side(face: FaceResult) -> float:
    return float(face.crop_box[2] - face.crop_box[0])


def _face_side(result: ImageAnalysisResult | VideoAnalysisResult) -> float | None:
    """The side of the face crop(s) the score comes from: an image's face whose score it is (mean face
    pooling: the smallest of them); a video's top person's median crop."""
    if isinstance(result, ImageAnalysisResult):
        faces = result.faces or []
        deciding = [f for f in faces if f.score == result.score] or faces
        return min((_crop_side(f) for f in deciding), default=None)
    top = next((p for p in result.persons or [] if p.counted and p.score == result.score), None)
    if top is None:
        return None
    sides = [_crop_side(f) for fp in result.frame_predictions for f in fp.faces or [] if f.person == top.person]
    return float(np.median(sides)) if sides else None
