"""Results from scores: pure functions, used by `Detector` and by scans (`scan/assemble.py`), so a scan
row and an `analyze` result come from the same code.

`image_result` takes one image's expert scores; `video_result` takes a finished video's `VideoSummary`,
its scored frames and its failed frames, and pools them. With early exit, experts that did not run are
NaN: scores then cover the experts that ran, and `score_interval` bounds the full ensemble's score.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np

from mffmoe.engine.early_exit import interval
from mffmoe.errors import MFFMoEError, VideoDecodeError
from mffmoe.inference.trust import agreement, pooled_experts
from mffmoe.media.video import VideoSummary
from mffmoe.pooling import Pooling
from mffmoe.results import (
    FaceResult,
    FrameFailure,
    FramePrediction,
    ImageAnalysisResult,
    VideoAnalysisResult,
    confidence,
    label,
)

R = TypeVar("R", ImageAnalysisResult, VideoAnalysisResult)
UNTRAINED_NOTE = "UNTRAINED: random weights (--untrained); this score means nothing"


def ensemble_score(experts: np.ndarray) -> float:
    """The ensemble's P(fake): the mean over the experts (those that ran, under early exit)."""
    ran = ~np.isnan(experts)
    return float(np.mean(experts if ran.all() else experts[ran]))


@dataclass(frozen=True)
class ScoredFrame:
    """A sampled frame and its per-expert P(fake) [E] (NaN for experts that did not run)."""

    frame_index: int
    timestamp: float
    experts: np.ndarray

    @property
    def score(self) -> float:
        return ensemble_score(self.experts)


def _fields(score: float, expert_scores: Iterable[float], threshold: float, untrained: bool, model_name: str,
            notes: Sequence[str], voters: Iterable[float] | None = None) -> dict[str, Any]:
    """The shared fields; `voters`: the experts' P(fake) the agreement counts (default `expert_scores`)."""
    expert_scores = [float(s) for s in expert_scores]
    return {
        "prediction": label(score, threshold),
        "confidence": confidence(score, threshold),
        "score": score,
        "expert_scores": expert_scores,
        "agreement": agreement(expert_scores if voters is None else list(voters), score, threshold),
        "threshold": threshold,
        "untrained": untrained,
        "model": model_name,
        "note": "; ".join(notes) or None,
    }


def _early_exit_fields(fields: dict[str, Any], low: float, high: float, ran: Sequence[int],
                       n_experts: int) -> dict[str, Any]:
    """`score` and `expert_scores` cover the experts that ran (roster order); the full ensemble's score
    lies in `score_interval`; the label is the full ensemble's."""
    fields.update(experts_run=len(ran), score_interval=(float(low), float(high)))
    if len(ran) < n_experts:
        note = (f"early exit: experts {list(ran)} of {n_experts} ran; score is their mean, the full ensemble's "
                f"lies in [{low:.4f}, {high:.4f}]")
        fields["note"] = "; ".join(x for x in (fields.get("note"), note) if x)
    return fields


def image_result(experts: np.ndarray, dimensions: dict[str, int], seconds: float, *, threshold: float,
                 untrained: bool, model_name: str, early_exit: bool = False) -> ImageAnalysisResult:
    """One image's result from its expert scores [E]."""
    experts = np.asarray(experts, dtype=np.float64)
    notes = [UNTRAINED_NOTE] if untrained else []
    if not early_exit:
        fields = _fields(ensemble_score(experts), experts, threshold, untrained, model_name, notes)
        return ImageAnalysisResult(processing_time=seconds, dimensions=dimensions, **fields)
    ran = [i for i, v in enumerate(experts) if not np.isnan(v)]
    low, high = interval(experts[None])
    fields = _fields(ensemble_score(experts), experts[ran], threshold, untrained, model_name, notes)
    return ImageAnalysisResult(processing_time=seconds, dimensions=dimensions,
                               **_early_exit_fields(fields, low[0], high[0], ran, len(experts)))


def video_result(path: str, summary: VideoSummary, frames: Mapping[int, ScoredFrame],
                 failures: Mapping[int, FrameFailure], seconds: float, *, pooling: Pooling, threshold: float,
                 untrained: bool, model_name: str, early_exit: bool = False) -> VideoAnalysisResult:
    """A video's result: the frames of `summary.indices` that were scored (`frames` may hold others,
    sampled before the indices were corrected; they are left out), pooled with `pooling`. Raises
    VideoDecodeError when none of them was scored."""
    wanted = summary.indices
    info = summary.info
    keep = [i for i in wanted if i in frames]
    failed = [failures.get(i) or FrameFailure(frame_index=i, timestamp=i / info.fps,
                                              error="frame not reached before the end of the stream")
              for i in wanted if i not in frames]
    if not keep:
        raise VideoDecodeError(f"{path}: none of the {len(wanted)} sampled frames could be decoded")
    scores = {i: frames[i].score for i in keep}
    frame_scores = list(scores.values())
    frame_predictions = [FramePrediction(index=n, frame_index=i, timestamp=frames[i].timestamp, score=scores[i],
                                         prediction=label(scores[i], threshold),
                                         expert_scores=[float(v) for v in frames[i].experts if not np.isnan(v)],
                                         agreement=agreement(frames[i].experts, scores[i], threshold))
                         for n, i in enumerate(wanted) if i in scores]  # n: the sample number, as the host
    video_score = float(np.clip(pooling(frame_scores), 0.0, 1.0))
    rows = np.stack([frames[i].experts for i in keep])
    ran = [e for e in range(rows.shape[1]) if not np.isnan(rows[:, e]).any()]
    expert_means = np.mean(rows[:, ran], axis=0)
    notes = []
    if untrained:
        notes.append(UNTRAINED_NOTE)
    if failed:
        notes.append(f"{len(failed)} of {len(wanted)} sampled frames could not be decoded")
    if info.frame_count and summary.count_exact and info.frame_count != summary.total:
        notes.append(f"container states {info.frame_count} frames; the stream has {summary.total}")
    fields = _fields(video_score, expert_means, threshold, untrained, model_name, notes,
                     voters=pooled_experts(rows, pooling))  # each expert pooled as the score is
    if early_exit:
        lows, highs = interval(rows)
        fields = _early_exit_fields(fields, float(np.clip(pooling(lows), 0, 1)), float(np.clip(pooling(highs), 0, 1)),
                                    ran, rows.shape[1])
    rotated = abs(info.rotation) % 180 == 90
    return VideoAnalysisResult(
        processing_time=seconds,
        dimensions={"width": info.height if rotated else info.width,
                    "height": info.width if rotated else info.height},
        frame_count=summary.total, frames_analyzed=len(keep), frames_failed=len(failed),
        failed_frames=failed, frame_predictions=frame_predictions, fps=info.fps, duration=info.duration,
        pooling=pooling.name,
        metrics={"final_average_score": float(np.mean(frame_scores)), "pooled_score": video_score,
                 "pooling": pooling.name, "min_frame_score": float(np.min(frame_scores)),
                 "max_frame_score": float(np.max(frame_scores)),
                 "std_frame_score": float(np.std(frame_scores)),
                 "fake_frame_ratio": float(np.mean([s >= threshold for s in frame_scores]))},
        **fields,
    )


# --- faces mode -----------------------------------------------------------------------------------------
NO_FACE_NOTE = ("no face found: the whole frame was scored; MFF-MoE was trained on face crops, so this "
                "score is outside what it was built for")


def face_results(faces: Sequence[Any], rows: np.ndarray, threshold: float,
                 persons: Sequence[int | None] | None = None) -> list[FaceResult]:
    """One FaceResult per scored face (`faces`: faces.finder.FaceInput; `rows`: their [F, E] experts)."""
    out = []
    for n, (f, row) in enumerate(zip(faces, rows, strict=True)):
        score = ensemble_score(row)
        out.append(FaceResult(box=[round(float(v), 2) for v in f.crop.face.box], detector_score=f.crop.face.score,
                              crop_box=list(f.crop.crop_box), score=score,
                              expert_scores=[float(v) for v in row if not np.isnan(v)],
                              prediction=label(score, threshold), person=None if persons is None else persons[n],
                              agreement=agreement(row, score, threshold)))
    return out


def pool_faces(rows: np.ndarray, how: str) -> tuple[float, np.ndarray]:
    """An image's score and expert scores from its faces' rows (largest face first): `max` (one fake
    face makes the image fake), `mean`, or `largest`."""
    scores = [ensemble_score(r) for r in rows]
    if how == "mean":
        return float(np.mean(scores)), np.nanmean(rows, axis=0)
    pick = 0 if how == "largest" else int(np.argmax(scores))
    return scores[pick], rows[pick]


def face_image_result(faces: Sequence[Any], rows: np.ndarray, dimensions: dict[str, int], seconds: float, *,
                      threshold: float, untrained: bool, model_name: str, face_pooling: str,
                      early_exit: bool = False) -> ImageAnalysisResult:
    """An image scored by its faces: `score` pooled over them (`face_pooling`), each face reported. With
    `early_exit`, `score_interval` pools the faces' bounds as the score pools their scores."""
    rows = np.asarray(rows, dtype=np.float64)
    score, experts = pool_faces(rows, face_pooling)
    notes = [UNTRAINED_NOTE] if untrained else []
    fields = _fields(score, [v for v in experts if not np.isnan(v)], threshold, untrained, model_name, notes)
    if early_exit:
        lows, highs = interval(rows)
        pick = (lambda v: float(np.mean(v))) if face_pooling == "mean" else (
            (lambda v: float(v[0])) if face_pooling == "largest" else (lambda v: float(np.max(v))))
        ran = [e for e in range(rows.shape[1]) if not np.isnan(rows[:, e]).any()]
        fields = _early_exit_fields(fields, pick(lows), pick(highs), ran, rows.shape[1])
    return ImageAnalysisResult(processing_time=seconds, dimensions=dimensions, crop="faces", in_scope=True,
                               faces=face_results(faces, rows, threshold), **fields)


#: Any result, or a union of them (`with_note`, `with_provenance` keep the caller's type).
AnyResult = TypeVar("AnyResult", bound="ImageAnalysisResult | VideoAnalysisResult")


def with_note(result: AnyResult, why: str) -> AnyResult:
    """`result` with `why` added to its note."""
    return cast(AnyResult, result.model_copy(update={"note": "; ".join(x for x in (result.note, why) if x)}))


def with_provenance(path: str | os.PathLike[str], result: AnyResult) -> AnyResult:
    """`result` with what the file at `path` says about itself (`mffmoe.provenance`: C2PA, EXIF, XMP/IPTC,
    PNG text, container tags): evidence beside the score, never folded into it. Metadata only (1-20 ms an
    image); a file that can no longer be read says so in the note. Shared by the Detector and scans."""
    from mffmoe.provenance.reader import read_provenance

    try:
        found = read_provenance(path)
    except MFFMoEError as e:
        return with_note(result, f"provenance not read: {e}")
    # without its `path`: a server's would be the upload's temporary name; the caller knows the file
    return cast(AnyResult, result.model_copy(update={"provenance": found.model_dump(mode="json", exclude={"path"})}))


def out_of_scope(result: R, why: str = NO_FACE_NOTE) -> R:
    """A frame-scored result of faces/auto mode: flagged `in_scope: false` (reason `no_face`), with the
    reason noted. The other scope reasons: `trust.judge_scope`."""
    note = "; ".join(x for x in (result.note, why) if x)
    reasons = ["no_face", *(r for r in result.scope_reasons if r != "no_face")]
    return result.model_copy(update={"crop": "frame", "in_scope": False, "note": note, "scope_reasons": reasons})
