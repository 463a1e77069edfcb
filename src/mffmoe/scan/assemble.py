"""Scored parts in (any order, any interleaving of files), finished results out.

A video's frames may be scored on different replicas and arrive in any order; its VIDEO_END part says how
many parts to expect. Results are built by `mffmoe.inference.assemble` (and, for videos in faces mode,
`mffmoe.inference.faces`), the functions `Detector` uses, so they equal `mffmoe analyze`: an image as
`Detector._assemble_image` builds it, a video in faces mode as `score_video_faces` ends.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mffmoe.config import DetectorConfig
from mffmoe.errors import ErrorInfo, MFFMoEError
from mffmoe.faces.base import Face
from mffmoe.faces.crops import FaceCrop
from mffmoe.faces.finder import FaceInput
from mffmoe.inference.assemble import (
    NO_FACE_NOTE,
    ScoredFrame,
    face_image_result,
    image_result,
    out_of_scope,
    video_result,
    with_provenance,
)
from mffmoe.inference.batching import score_items
from mffmoe.inference.detector import Detector

# The end of `score_video_faces` (persons from the sampled frames' faces): private there, used here so a
# scan's video equals analyze's. A public helper there (the tail of score_video_faces) would replace them.
from mffmoe.inference.faces import SampledFrame, faces_video_result
from mffmoe.inference.trust import R, judge_scope
from mffmoe.media.source import NO_INPUT
from mffmoe.media.video import VideoSummary
from mffmoe.pooling import Pooling, get_pooling
from mffmoe.results import AnalysisResult, FrameFailure, ImageAnalysisResult
from mffmoe.scan.decode import ERROR, FRAME, FRAME_ERROR, IMAGE, VIDEO_END, Part

_NO_PIXELS = np.zeros((0, 0, 3), dtype=np.uint8)


@dataclass
class Finished:
    path: str
    outcome: AnalysisResult | ErrorInfo
    seconds: float


def _with_provenance(done: Finished) -> Finished:
    """`done` with what its file says about itself, as the Detector adds it (`assemble.with_provenance`)."""
    if isinstance(done.outcome, ErrorInfo):
        return done
    return Finished(done.path, with_provenance(done.path, done.outcome), done.seconds)


@dataclass
class _Video:
    scored: dict[int, ScoredFrame] = field(default_factory=dict)          # frame mode
    sampled: dict[int, SampledFrame] = field(default_factory=dict)            # faces mode
    rows: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # faces mode: (frame, face or -1)
    failures: dict[int, FrameFailure] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def settled(self) -> int:
        """Frames heard of, counted by index (a part delivered twice counts once)."""
        return len(self.scored) + len(self.sampled) + len(self.failures)


def faces_of(faces: list[dict[str, Any]], thumbs: np.ndarray | None = None) -> list[FaceInput]:
    """Found faces back from their `decode.face_meta` (with their thumbnails as the crop pixels, for a
    person's picture; the crop's model input stays behind, already scored)."""
    out = []
    for n, f in enumerate(faces):
        face = Face(tuple(f["box"]), f["score"], tuple((x, y) for x, y in f["keypoints"]))
        pixels = _NO_PIXELS if thumbs is None else thumbs[n]
        out.append(FaceInput(FaceCrop(face, tuple(f["crop_box"]), pixels, f["angle"]), NO_INPUT))
    return out


def score_parts(detector: Detector, parts: list[Part]) -> list[Part]:
    """Score the model inputs of `parts` (all with pixels) in one batch: each part gets its [K, E] expert
    scores and its inputs' share of the time, as `Detector.analyze_many` shares it out."""
    inputs = [row for p in parts if p.pixels is not None for row in p.pixels]
    experts, share = score_items(detector.engine, inputs, detector.batch_size)
    at = 0
    for part in parts:
        k = part.inputs
        part.pixels, part.experts = None, experts[at:at + k]
        part.seconds += share * k
        at += k
    return parts


class Assembler:
    """Builds results as a detector with these settings would (early exit is not used in scans); `crop`
    is the (resolved) mode the parts were decoded in."""

    def __init__(self, threshold: float, pooling: Pooling, untrained: bool, model_name: str, crop: str = "frame",
                 face_pooling: str = "max", input_size: int | None = None) -> None:
        self.threshold = threshold
        self.input_size = input_size  # for the scope checks (`trust.judge_scope`); None: not checked
        self.pooling = pooling
        self.untrained = untrained
        self.model_name = model_name
        self.crop = crop
        self.face_pooling = face_pooling
        self._videos: dict[str, _Video] = {}

    @classmethod
    def for_detector(cls, detector: Detector, crop: str | None = None) -> Assembler:
        """`crop`: the mode the parts were decoded in (None: the detector's)."""
        return cls(detector.threshold, detector.pool, detector.random_weights, detector.model_name,
                   crop or detector.crop, detector.face_pooling, detector.input_size)

    @classmethod
    def for_config(cls, config: DetectorConfig, input_size: int | None = None) -> Assembler:
        """Where the model runs elsewhere (the Ray driver): the settings are all it needs (the crop mode
        resolved; `input_size`: the weights', for the scope checks)."""
        if config.crop is None:
            raise ValueError("the crop mode is not resolved (None means the weights' own: resolve it first)")
        return cls(config.threshold, get_pooling(config.pooling), config.untrained, config.model_name,
                   config.crop, config.face_pooling, input_size)

    @property
    def faces(self) -> bool:
        return self.crop != "frame"

    @property
    def open_files(self) -> list[str]:
        return list(self._videos)

    def drop(self, key: str) -> None:
        """Forget a file whose decoding died half-way; parts of it arriving later are ignored."""
        self._videos.pop(key, None)

    def add(self, part: Part) -> list[Finished]:
        """The files this part finishes, each with its provenance, as `Detector.provenanced` adds it."""
        return [_with_provenance(f) for f in self._add(part)]

    def _add(self, part: Part) -> list[Finished]:
        m = part.meta
        if part.kind == IMAGE:
            assert part.experts is not None, "image parts are scored before they are assembled"
            return [Finished(part.key, self._image(part), part.seconds)]
        if part.kind == ERROR:
            return [Finished(part.key, ErrorInfo(**m), part.seconds)]
        video = self._videos.setdefault(part.key, _Video())
        video.seconds += part.seconds
        if part.kind == FRAME:
            assert part.experts is not None, "frame parts are scored before they are assembled"
            self._frame(video, part)
        elif part.kind == FRAME_ERROR:
            video.failures[m["frame_index"]] = FrameFailure(frame_index=m["frame_index"], timestamp=m["timestamp"],
                                                            error=m["error"])
        elif part.kind == VIDEO_END:
            video.end = m
        else:
            raise ValueError(f"unknown part kind {part.kind!r}")
        # Frames are counted by index, so a part delivered twice (a retried task) cannot end a video early.
        if video.end is None or video.settled < video.end["parts"]:
            return []
        del self._videos[part.key]
        return [Finished(part.key, self._video_outcome(part.key, video), video.seconds)]

    def _scope(self, result: R, jpeg_quality: int | None = None) -> R:
        return result if self.input_size is None else judge_scope(result, self.input_size, jpeg_quality)

    def _image(self, part: Part) -> AnalysisResult:
        """As `Detector._assemble_image`: by its faces when it has some, else its frame (flagged out of
        scope in faces mode); then the scope checks."""
        return self._scope(self._image_scores(part), part.meta.get("jpeg_quality"))

    def _image_scores(self, part: Part) -> ImageAnalysisResult:
        m, experts = part.meta, part.experts
        assert experts is not None
        dims = {"width": m["width"], "height": m["height"]}
        faces = faces_of(m.get("faces") or []) if self.faces else []
        if faces:
            return face_image_result(faces, experts, dims, part.seconds, threshold=self.threshold,
                                     untrained=self.untrained, model_name=self.model_name,
                                     face_pooling=self.face_pooling)
        result = image_result(experts[0], dims, part.seconds, threshold=self.threshold, untrained=self.untrained,
                              model_name=self.model_name)
        return out_of_scope(result, m.get("faces_note") or NO_FACE_NOTE) if self.faces else result

    def _frame(self, video: _Video, part: Part) -> None:
        m, experts = part.meta, part.experts
        assert experts is not None
        i = m["frame_index"]
        if not self.faces:
            video.scored[i] = ScoredFrame(i, m["timestamp"], experts[0])
            return
        faces = faces_of(m["faces"], part.thumbs)
        looks = [np.asarray(f["look"], dtype=np.float64) for f in m["faces"]]
        video.sampled[i] = SampledFrame(i, m["timestamp"], faces, looks, None)
        if faces:
            video.rows.update(((i, n), experts[n]) for n in range(len(faces)))
        else:
            video.rows[(i, -1)] = experts[0]

    def _video_outcome(self, path: str, video: _Video) -> AnalysisResult | ErrorInfo:
        end = video.end
        assert end is not None
        if "error" in end:
            return ErrorInfo(**end["error"])
        summary = VideoSummary.from_dict(end["summary"])
        start = time.perf_counter() - video.seconds  # results take their time as `now - start`
        try:
            if not self.faces:
                return self._scope(video_result(path, summary, video.scored, video.failures, video.seconds,
                                                pooling=self.pooling, threshold=self.threshold,
                                                untrained=self.untrained, model_name=self.model_name))
            return self._scope(faces_video_result(path, summary, video.sampled, video.rows, video.failures, start,
                                                  pool=self.pooling, threshold=self.threshold,
                                                  untrained=self.untrained, model_name=self.model_name))
        except MFFMoEError as e:
            return ErrorInfo.of(e)
