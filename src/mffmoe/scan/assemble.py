"""Scored parts in (any order, any interleaving of files), finished results out.

A video's frames may be scored on different replicas and arrive in any order; its VIDEO_END part says how
many parts to expect. Results are built by the detector's own code, so they equal `mffmoe analyze`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Sequence

import numpy as np

from mffmoe.detector import Detector
from mffmoe.errors import ErrorInfo, MFFMoEError
from mffmoe.media.video import VideoInfo
from mffmoe.model.checkpoint import CheckpointInfo
from mffmoe.results import AnalysisResult, FrameFailure
from mffmoe.scan.decode import ERROR, FRAME, FRAME_ERROR, IMAGE, VIDEO_END, Part


@dataclass
class Finished:
    path: str
    outcome: AnalysisResult | ErrorInfo
    seconds: float


@dataclass
class _Video:
    scored: dict[int, tuple[float, float, np.ndarray]] = field(default_factory=dict)
    failures: dict[int, FrameFailure] = field(default_factory=dict)
    end: dict | None = None
    seconds: float = 0.0


class NoEngine:
    """Stands in for an engine where results are built but the model runs elsewhere (the Ray driver)."""

    name = device = "none"

    def __init__(self, info: CheckpointInfo) -> None:
        self.roster = info.roster
        self.input_size = info.input_size

    def predict(self, batch) -> np.ndarray:
        raise RuntimeError("this detector only builds results; inference runs on the scan's replicas")

    def predict_experts(self, batch, experts: Sequence[int]) -> np.ndarray:
        return self.predict(batch)


class Assembler:
    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self._videos: dict[str, _Video] = {}

    @property
    def open_files(self) -> list[str]:
        return list(self._videos)

    def drop(self, key: str) -> None:
        """Forget a file whose decoding died half-way; parts of it arriving later are ignored."""
        self._videos.pop(key, None)

    def add(self, part: Part) -> list[Finished]:
        d = self.detector
        if part.kind == IMAGE:
            result = d._image_result(part.experts, {"width": part.meta["width"], "height": part.meta["height"]},
                                     part.seconds, d.threshold)
            return [Finished(part.key, result, part.seconds)]
        if part.kind == ERROR:
            return [Finished(part.key, ErrorInfo(**part.meta), part.seconds)]
        video = self._videos.setdefault(part.key, _Video())
        video.seconds += part.seconds
        if part.kind == FRAME:
            m = part.meta
            video.scored[m["frame_index"]] = (m["timestamp"], float(np.mean(part.experts)), part.experts)
        elif part.kind == FRAME_ERROR:
            m = part.meta
            video.failures[m["frame_index"]] = FrameFailure(frame_index=m["frame_index"], timestamp=m["timestamp"],
                                                            error=m["error"])
        elif part.kind == VIDEO_END:
            video.end = part.meta
        else:
            raise ValueError(f"unknown part kind {part.kind!r}")
        # Frames are counted by index, so a part delivered twice (a retried task) cannot end a video early.
        if video.end is None or len(video.scored) + len(video.failures) < video.end["parts"]:
            return []
        del self._videos[part.key]
        return [Finished(part.key, self._video_outcome(part.key, video), video.seconds)]

    def _video_outcome(self, path: str, video: _Video) -> AnalysisResult | ErrorInfo:
        end = video.end
        if "error" in end:
            return ErrorInfo(**end["error"])
        sampler = SimpleNamespace(indices=end["indices"], total=end["total"], count_exact=end["count_exact"],
                                  info=VideoInfo(**end["info"]))
        try:
            result = self.detector._video_result(path, sampler, video.scored, video.failures,
                                                 self.detector.pooling, self.detector.threshold,
                                                 time.perf_counter())
        except MFFMoEError as e:
            return ErrorInfo.of(e)
        result.processing_time = video.seconds
        return result
