"""Scored parts in (any order, any interleaving of files), finished results out.

A video's frames may be scored on different replicas and arrive in any order; its VIDEO_END part says how
many parts to expect. Results are built by `mffmoe.inference.assemble`, the functions `Detector` uses, so
they equal `mffmoe analyze`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mffmoe.config import DetectorConfig
from mffmoe.errors import ErrorInfo, MFFMoEError
from mffmoe.inference.assemble import ScoredFrame, image_result, video_result
from mffmoe.inference.detector import Detector
from mffmoe.media.video import VideoSummary
from mffmoe.pooling import Pooling, get_pooling
from mffmoe.results import AnalysisResult, FrameFailure
from mffmoe.scan.decode import ERROR, FRAME, FRAME_ERROR, IMAGE, VIDEO_END, Part


@dataclass
class Finished:
    path: str
    outcome: AnalysisResult | ErrorInfo
    seconds: float


@dataclass
class _Video:
    scored: dict[int, ScoredFrame] = field(default_factory=dict)
    failures: dict[int, FrameFailure] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    seconds: float = 0.0


class Assembler:
    """Builds results as a detector with these settings would (early exit is not used in scans)."""

    def __init__(self, threshold: float, pooling: Pooling, untrained: bool, model_name: str) -> None:
        self.threshold = threshold
        self.pooling = pooling
        self.untrained = untrained
        self.model_name = model_name
        self._videos: dict[str, _Video] = {}

    @classmethod
    def for_detector(cls, detector: Detector) -> Assembler:
        return cls(detector.threshold, detector.pool, detector.random_weights, detector.model_name)

    @classmethod
    def for_config(cls, config: DetectorConfig) -> Assembler:
        """Where the model runs elsewhere (the Ray driver): the settings are all it needs."""
        return cls(config.threshold, get_pooling(config.pooling), config.untrained, config.model_name)

    @property
    def open_files(self) -> list[str]:
        return list(self._videos)

    def drop(self, key: str) -> None:
        """Forget a file whose decoding died half-way; parts of it arriving later are ignored."""
        self._videos.pop(key, None)

    def add(self, part: Part) -> list[Finished]:
        m = part.meta
        if part.kind == IMAGE:
            assert part.experts is not None, "image parts are scored before they are assembled"
            result = image_result(part.experts, {"width": m["width"], "height": m["height"]}, part.seconds,
                                  threshold=self.threshold, untrained=self.untrained, model_name=self.model_name)
            return [Finished(part.key, result, part.seconds)]
        if part.kind == ERROR:
            return [Finished(part.key, ErrorInfo(**m), part.seconds)]
        video = self._videos.setdefault(part.key, _Video())
        video.seconds += part.seconds
        if part.kind == FRAME:
            assert part.experts is not None, "frame parts are scored before they are assembled"
            video.scored[m["frame_index"]] = ScoredFrame(m["frame_index"], m["timestamp"], part.experts)
        elif part.kind == FRAME_ERROR:
            video.failures[m["frame_index"]] = FrameFailure(frame_index=m["frame_index"], timestamp=m["timestamp"],
                                                            error=m["error"])
        elif part.kind == VIDEO_END:
            video.end = m
        else:
            raise ValueError(f"unknown part kind {part.kind!r}")
        # Frames are counted by index, so a part delivered twice (a retried task) cannot end a video early.
        if video.end is None or len(video.scored) + len(video.failures) < video.end["parts"]:
            return []
        del self._videos[part.key]
        return [Finished(part.key, self._video_outcome(part.key, video), video.seconds)]

    def _video_outcome(self, path: str, video: _Video) -> AnalysisResult | ErrorInfo:
        end = video.end
        assert end is not None
        if "error" in end:
            return ErrorInfo(**end["error"])
        try:
            return video_result(path, VideoSummary.from_dict(end["summary"]), video.scored, video.failures,
                                video.seconds, pooling=self.pooling, threshold=self.threshold,
                                untrained=self.untrained, model_name=self.model_name)
        except MFFMoEError as e:
            return ErrorInfo.of(e)
