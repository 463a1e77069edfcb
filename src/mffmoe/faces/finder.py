"""The faces step of the data path (media -> decode -> faces -> preprocess -> engine): detect, keep, crop,
preprocess. One `FaceFinder` serves images and video frames, the CLI, the server and scans alike."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from mffmoe.faces.base import FaceDetector
from mffmoe.faces.crops import BOX_SLACK, DEFAULT_MARGIN, DEFAULT_MAX_FACES, FaceCrop, crop_face, select_faces
from mffmoe.faces.detectors import create_detector
from mffmoe.media.preprocess import preprocess

THUMBNAIL = 96  # px: a person's representative face in video results


@dataclass(frozen=True)
class FaceInput:
    """A kept face, ready for the engine: its crop and the crop preprocessed to [3, S, S]."""
    crop: FaceCrop
    pixels: np.ndarray

    def thumbnail(self) -> Image.Image:
        return Image.fromarray(self.crop.pixels).resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)


class FaceFinder:
    """Detect faces in an RGB frame, keep them by the documented rule (`crops.select_faces`), cut their
    crops (`crops.crop_face`) and preprocess each as the spec preprocesses an image."""

    def __init__(self, detector: FaceDetector | str = "blazeface", *, margin: float = DEFAULT_MARGIN,
                 align: bool = False, min_face: int = 32, max_faces: int = DEFAULT_MAX_FACES,
                 detector_options: Mapping[str, Any] | None = None) -> None:
        self.detector = (create_detector(detector, min_face=min_face, **(detector_options or {}))
                         if isinstance(detector, str) else detector)
        self.margin = margin
        self.align = align
        self.min_face = min_face
        self.max_faces = max_faces

    def crops(self, rgb: np.ndarray) -> list[FaceCrop]:
        """The kept faces' crops (uint8), largest face first."""
        faces = select_faces(self.detector.detect(rgb), min_size=self.min_face * BOX_SLACK, max_faces=self.max_faces)
        return [crop_face(rgb, f, self.margin, self.align) for f in faces]

    def find(self, rgb: np.ndarray, input_size: int) -> list[FaceInput]:
        """The kept faces, preprocessed for a model of `input_size`."""
        return [FaceInput(c, preprocess(c.pixels, input_size)) for c in self.crops(rgb)]

    def close(self) -> None:
        self.detector.close()
