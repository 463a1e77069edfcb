"""The host's detector API: `MFFMoEDetectorV1(config).load()` then `.analyze(media_path=...)`, an adapter
over `Detector` that maps the host's `MFFMoEV1Config` to a `DetectorConfig` and honours its
`isImage`/`isVideo` switches."""
from __future__ import annotations

import os
from typing import Any

from mffmoe.config import MFFMoEV1Config
from mffmoe.errors import MediaTypeDisabledError, NotLoadedError
from mffmoe.inference.detector import Detector
from mffmoe.media.probe import MediaKind, probe_kind
from mffmoe.results import AnalysisResult


class MFFMoEDetectorV1:
    def __init__(self, config: MFFMoEV1Config | None = None) -> None:
        self.config = config or MFFMoEV1Config()
        self.detector: Detector | None = None

    def load(self) -> MFFMoEDetectorV1:
        self.detector = Detector.from_config(self.config.detector_config())
        return self

    def analyze(self, media_path: str | os.PathLike[str], **kwargs: Any) -> AnalysisResult:
        if self.detector is None:
            raise NotLoadedError("call load() before analyze()")
        kind = probe_kind(media_path)  # probed once: the detector is told the kind
        if kind is MediaKind.IMAGE and not self.config.isImage:
            raise MediaTypeDisabledError(f"{media_path}: images are disabled in this configuration (isImage=False)")
        if kind is MediaKind.VIDEO and not self.config.isVideo:
            raise MediaTypeDisabledError(f"{media_path}: videos are disabled in this configuration (isVideo=False)")
        return self.detector.analyze(media_path, kind=kind, **kwargs)
