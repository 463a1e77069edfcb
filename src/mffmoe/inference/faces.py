"""A video in faces mode: faces on every sampled frame, scored in batches, grouped into persons.

Decoding and face detection run on a thread (`decode_ahead`) while the engine scores earlier crops; the
crops of all faces of consecutive frames share batches (a frame with three faces adds three crops). A
frame without a face is scored whole, so that every sampled frame keeps the host's per-frame fields.

Persons (`faces.tracks.group_persons`): position and appearance across the sampled frames. A person's
score is its face scores pooled with the video's pooling; the video's score is the highest over the
persons seen in enough frames (`min_person_frames`: 3 sampled frames, or all frames with faces when
fewer), so that one stray false face cannot decide a video. With no face in any frame, the video is
scored as in frame mode and flagged out of scope.

Early exit (an `EarlyExitEngine`) is decided per video, as in frame mode: every crop runs the cheapest
expert group while decoding; then, with the persons known, later groups run on the crops the video's
score is pooled from (the counted persons' faces; the frames, without any face) until the score's
interval is on one side of the threshold. The grouping does not depend on the scores, and for a
monotone pooling a person's score lies in [pool(face lows), pool(face highs)], so the video's score
lies in [max over persons of those lows, max of the highs]: the label equals the full ensemble's.
Other faces and frames keep the cheapest group's mean. Non-monotone poolings run every expert.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mffmoe.engine.base import Engine
from mffmoe.engine.early_exit import EarlyExitEngine, decided, groups, interval
from mffmoe.faces.finder import FaceFinder, FaceInput
from mffmoe.faces.tracks import TrackInput, appearance, group_persons
from mffmoe.inference.assemble import (
    ScoredFrame,
    _early_exit_fields,
    ensemble_score,
    face_results,
    out_of_scope,
    video_result,
)
from mffmoe.inference.batching import lookahead, score_batch, video_step
from mffmoe.inference.trust import agreement, pooled_experts
from mffmoe.media.preprocess import preprocess
from mffmoe.media.source import NO_INPUT, VideoItem, decode_ahead
from mffmoe.pooling import Pooling
from mffmoe.results import FrameFailure, PersonResult, TimelinePoint, VideoAnalysisResult, confidence, label

PERSON_FRAMES = 3
Key = tuple[int, int]  # (frame index, face number or -1 for the whole frame)


@dataclass
class SampledFrame:
    """A sampled video frame in faces mode: its kept faces (with appearance, for tracking), or its whole
    frame when it has none."""
    frame_index: int
    timestamp: float
    faces: list[FaceInput]
    looks: list[np.ndarray]            # appearance per face, for tracking
    frame: np.ndarray | None           # the whole frame, preprocessed, when it has no face
    error: str | None = None


def _kept(face: FaceInput) -> FaceInput:
    """A face as a video's result keeps it until the end: without its model input (3 MB) and with its
    thumbnail in place of the crop (about 1 MB at 1080p; the thumbnail is all the result shows of it). 100
    frames of two faces held 800 MB of them before."""
    thumb = np.asarray(face.thumbnail())
    return dataclasses.replace(face, pixels=NO_INPUT, crop=dataclasses.replace(face.crop, pixels=thumb))


def min_person_frames(frames_with_faces: int) -> int:
    """Sampled frames a person needs to count towards the video's score."""
    return max(1, min(PERSON_FRAMES, frames_with_faces))


def score_video_faces(item: VideoItem, finder: FaceFinder, engine: Engine, *, input_size: int, batch_size: int,
                      pool: Pooling, threshold: float, untrained: bool, model_name: str,
                      progress: Callable[[int, int], None] | None, start: float) -> VideoAnalysisResult:
    rows: dict[Key, np.ndarray] = {}   # (frame_index, face number or -1 for the frame) -> [E]
    queue: list[tuple[Key, np.ndarray]] = []
    sampled: dict[int, SampledFrame] = {}
    failures: dict[int, FrameFailure] = {}
    early = _FacesEarlyExit(engine, pool, batch_size) if isinstance(engine, EarlyExitEngine) else None

    def run() -> None:
        if early is not None:
            rows.update(early.add(queue))
            queue.clear()
        else:
            keys, batch = [k for k, _ in queue], np.stack([t for _, t in queue])
            queue.clear()  # the crops live on in `batch` only, while the engine runs
            rows.update(zip(keys, score_batch(engine, batch, batch_size), strict=True))
        if progress:
            planned = item.planned
            progress(sum(1 for i in planned if i in sampled or i in failures), len(planned))

    def samples() -> Iterator[SampledFrame]:
        for s in item.samples():
            if s.image is None:
                yield SampledFrame(s.frame_index, s.timestamp, [], [], None, s.error or "frame not decoded")
                continue
            faces = finder.find(s.image, input_size)
            looks = [appearance(f.crop.pixels) for f in faces]
            frame = None if faces else preprocess(s.image, input_size)
            yield SampledFrame(s.frame_index, s.timestamp, faces, looks, frame)

    step = video_step(len(item.planned), batch_size, engine)  # frames per call (a short video: several)
    queued_frames = 0
    with item, decode_ahead(samples(), lookahead(batch_size, engine, faces=True)) as decoded:
        for s in decoded:
            if s.error is not None:
                failures[s.frame_index] = FrameFailure(frame_index=s.frame_index, timestamp=s.timestamp,
                                                       error=s.error)
                continue
            if s.frame is not None:
                queue.append(((s.frame_index, -1), s.frame))
            queue += [((s.frame_index, n), f.pixels) for n, f in enumerate(s.faces)]
            # kept for the result as `_kept` leaves it; the queue (and early exit, for later groups) holds
            # the model inputs it needs
            sampled[s.frame_index] = dataclasses.replace(s, frame=None, faces=[_kept(f) for f in s.faces])
            queued_frames += 1
            if len(queue) >= batch_size or queued_frames >= step:
                run()
                queued_frames = 0
        if queue:
            run()
    if early is not None:
        early.finish(rows, scored_parts(item.summary, sampled), threshold)
    return faces_video_result(item.path, item.summary, sampled, rows, failures, start, pool=pool,
                              threshold=threshold, untrained=untrained, model_name=model_name,
                              early_exit=early is not None)


class _FacesEarlyExit:
    """Per-video early exit over a faces-mode video's crops (see the module's docstring): `add` runs the
    cheapest group on each queued batch and keeps the crops later groups may need; `finish` runs later
    groups on the crops the score is pooled from until its interval is decided."""

    def __init__(self, early: EarlyExitEngine, pool: Pooling, batch_size: int) -> None:
        self.engine = early.engine
        self.pool = pool
        self.batch_size = max(1, batch_size)
        self.groups = groups(early.costs, early.workers)
        if not pool.monotone:  # no valid bound: every expert, in one group
            self.groups = [sorted(i for g in self.groups for i in g)]
        self.crops: dict[Key, np.ndarray] = {}

    def add(self, queue: Sequence[tuple[Key, np.ndarray]]) -> dict[Key, np.ndarray]:
        out = np.full((len(queue), len(self.engine.roster)), np.nan)
        for at in range(0, len(queue), self.batch_size):
            batch = np.stack([t for _, t in queue[at:at + self.batch_size]])
            out[at:at + len(batch), self.groups[0]] = self.engine.predict_experts(batch, self.groups[0])
        if len(self.groups) > 1:
            self.crops.update(queue)
        return dict(zip((k for k, _ in queue), out, strict=True))

    def finish(self, rows: dict[Key, np.ndarray], parts: list[list[Key]], threshold: float) -> None:
        """Fill `rows` in place: further groups on the keys of `parts` until the label is fixed."""
        need = [k for part in parts for k in part]
        for group in self.groups[1:] if need else []:
            low, high = score_bounds(rows, parts, self.pool)
            if decided(np.array([low]), np.array([high]), threshold)[0]:
                break
            for at in range(0, len(need), self.batch_size):
                keys = need[at:at + self.batch_size]
                scores = self.engine.predict_experts(np.stack([self.crops[k] for k in keys]), group)
                for k, row in zip(keys, scores, strict=True):
                    rows[k][group] = row
        self.crops.clear()


def scored_parts(summary: Any, sampled: dict[int, SampledFrame]) -> list[list[Key]]:
    """The rows a faces-mode video's score is pooled from: one list per counted person (the video's score
    is the highest of their pooled scores), or, when no frame has a face, one list of all the frames."""
    kept = [i for i in summary.indices if i in sampled]
    if not any(sampled[i].faces for i in kept):
        return [[(i, -1) for i in kept]]
    keys, person_of = _grouping(summary, kept, sampled)
    counted = _counted(keys, person_of, frames_with_faces=sum(1 for i in kept if sampled[i].faces))
    return [[k for k in keys if person_of[k] == p] for p in sorted(counted)]


def score_bounds(rows: dict[Key, np.ndarray], parts: list[list[Key]], pool: Pooling) -> tuple[float, float]:
    """Bounds of the full ensemble's video score (monotone `pool`): the highest part's pooled face lows
    and highs, clipped as the score is."""
    lows, highs = [], []
    for part in parts:
        low, high = interval(np.stack([rows[k] for k in part]))
        lows.append(float(np.clip(pool(low), 0.0, 1.0)))
        highs.append(float(np.clip(pool(high), 0.0, 1.0)))
    return max(lows), max(highs)


def faces_video_result(path: str, summary: Any, sampled: dict[int, SampledFrame],
                       rows: dict[Key, np.ndarray], failures: dict[int, FrameFailure], start: float, *,
                       pool: Pooling, threshold: float, untrained: bool, model_name: str,
                       early_exit: bool = False) -> VideoAnalysisResult:
    """A faces-mode video's result from its scored samples (`rows`: (frame index, face number, or -1 for
    the whole frame) -> experts): persons when any frame has a face, else the frames, flagged out of scope.
    With `early_exit`, `experts_run` and `score_interval` as `scored_parts` and `score_bounds` say.
    Scans build their video results with it too."""
    kept = [i for i in summary.indices if i in sampled]
    common = _Common(pool, threshold, untrained, model_name)
    if not any(sampled[i].faces for i in kept):  # frame mode, flagged
        frames = {i: ScoredFrame(i, sampled[i].timestamp, rows[(i, -1)]) for i in kept}
        return out_of_scope(common.video_result(path, summary, frames, failures, start, early_exit=early_exit))
    result = _persons_result(path, summary, kept, sampled, rows, failures, start, common)
    if not early_exit:
        return result
    parts = scored_parts(summary, sampled)
    scored = np.stack([rows[k] for part in parts for k in part])
    ran = [e for e in range(scored.shape[1]) if not np.isnan(scored[:, e]).any()]
    low, high = score_bounds(rows, parts, pool)
    return result.model_copy(update=_early_exit_fields({"note": result.note}, low, high, ran, scored.shape[1]))


@dataclass(frozen=True)
class _Common:
    """What every video result of one call shares."""
    pool: Pooling
    threshold: float
    untrained: bool
    model_name: str

    def video_result(self, path: str, summary: Any, frames: dict[int, ScoredFrame],
                     failures: dict[int, FrameFailure], start: float, early_exit: bool = False) -> VideoAnalysisResult:
        return video_result(path, summary, frames, failures, time.perf_counter() - start, pooling=self.pool,
                            threshold=self.threshold, untrained=self.untrained, model_name=self.model_name,
                            early_exit=early_exit)


def _persons_result(path: str, summary: Any, kept: list[int], sampled: dict[int, SampledFrame],
                    rows: dict[tuple[int, int], np.ndarray], failures: dict[int, FrameFailure], start: float,
                    common: _Common) -> VideoAnalysisResult:
    threshold, pool = common.threshold, common.pool
    position = {i: n for n, i in enumerate(summary.indices)}  # the sample number, as the host's index
    keys, person_of = _grouping(summary, kept, sampled)
    # each frame: its own score is its highest face's (or its whole frame's, without a face)
    frames: dict[int, ScoredFrame] = {}
    for i in kept:
        s = sampled[i]
        if s.faces:
            best = max(range(len(s.faces)), key=lambda n: ensemble_score(rows[(i, n)]))
            frames[i] = ScoredFrame(i, s.timestamp, rows[(i, best)])
        else:
            frames[i] = ScoredFrame(i, s.timestamp, rows[(i, -1)])
    base = common.video_result(path, summary, frames, failures, start)
    per_frame = {i: face_results(sampled[i].faces, np.stack([rows[(i, n)] for n in range(len(sampled[i].faces))])
                                 if sampled[i].faces else np.zeros((0, 1)), threshold,
                                 [person_of[(i, n)] for n in range(len(sampled[i].faces))]) for i in kept}
    predictions = [p.model_copy(update={"faces": per_frame[p.frame_index]}) for p in base.frame_predictions]
    persons = _persons(keys, person_of, sampled, rows, per_frame, position, pool, threshold,
                       frames_with_faces=sum(1 for i in kept if sampled[i].faces))
    counted = [p for p in persons if p.counted]
    top = max(counted, key=lambda p: p.score)
    mine = np.stack([rows[k] for k in keys if person_of[k] == top.person])
    experts = np.nanmean(mine[:, ~np.isnan(mine).all(axis=0)], axis=0)  # early exit: the experts that ran
    note = "; ".join(x for x in (base.note, f"{len(persons)} person(s) seen; the score is person {top.person}'s")
                     if x)
    return base.model_copy(update={
        "score": top.score, "prediction": label(top.score, threshold), "confidence": confidence(top.score, threshold),
        "expert_scores": [float(v) for v in experts], "crop": "faces", "in_scope": True,
        "frame_predictions": predictions, "persons": persons, "note": note, "agreement": top.agreement,
        "metrics": {**base.metrics, "pooled_score": top.score, "persons": len(persons),
                    "max_person_score": max(p.score for p in persons)},
    })


def _grouping(summary: Any, kept: list[int], sampled: dict[int, SampledFrame]) -> tuple[list[Key], dict[Key, int]]:
    """The faces of the kept frames, and the person of each (by position and appearance, not by score)."""
    position = {i: n for n, i in enumerate(summary.indices)}
    keys = [(i, n) for i in kept for n in range(len(sampled[i].faces))]
    tracks = [TrackInput(position[i], sampled[i].faces[n].crop.face.box, sampled[i].looks[n]) for i, n in keys]
    return keys, dict(zip(keys, group_persons(tracks), strict=True))


def _counted(keys: Sequence[Key], person_of: dict[Key, int], frames_with_faces: int) -> set[int]:
    """The persons that count towards the video's score: those seen in enough frames, else all."""
    need = min_person_frames(frames_with_faces)
    seen: dict[int, set[int]] = {}
    for i, n in keys:
        seen.setdefault(person_of[(i, n)], set()).add(i)
    return {p for p, frames in seen.items() if len(frames) >= need} or set(seen)


def _persons(keys: Sequence[Key], person_of: dict[Key, int], sampled: dict[int, SampledFrame],
             rows: dict[Key, np.ndarray], per_frame: dict[int, list[Any]], position: dict[int, int],
             pool: Pooling, threshold: float, frames_with_faces: int) -> list[PersonResult]:
    counted = _counted(keys, person_of, frames_with_faces)
    out = []
    for person in sorted(set(person_of.values())):
        mine = [k for k in keys if person_of[k] == person]
        scores = [ensemble_score(rows[k]) for k in mine]
        score = float(np.clip(pool(scores), 0.0, 1.0))
        rep = max(mine, key=lambda k: sampled[k[0]].faces[k[1]].crop.face.score)
        timeline = [TimelinePoint(index=position[i], frame_index=i, timestamp=sampled[i].timestamp,
                                  score=ensemble_score(rows[(i, n)])) for i, n in mine]
        frames_seen = len({i for i, _ in mine})
        out.append(PersonResult(person=person, score=score, prediction=label(score, threshold), frames=frames_seen,
                                counted=person in counted, timeline=timeline, face=per_frame[rep[0]][rep[1]],
                                face_frame_index=rep[0],
                                thumbnail=_data_uri(sampled[rep[0]].faces[rep[1]]),
                                agreement=agreement(pooled_experts(np.stack([rows[k] for k in mine]), pool), score,
                                                    threshold)))
    return out


def _data_uri(face: FaceInput) -> str:
    buf = io.BytesIO()
    face.thumbnail().save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()

