"""What a face detector gives (`Face`), the interface every detector implements, and the registry they
join (`register_detector`; `faces.detectors.create_detector` builds one by name)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

Box = tuple[float, float, float, float]  # left, top, right, bottom, in image pixels


@dataclass(frozen=True)
class Face:
    """One detected face: its box, the detector's confidence, and keypoints in image pixels (for
    BlazeFace: right eye, left eye, nose tip, mouth centre, right ear, left ear; the person's right)."""
    box: Box
    score: float
    keypoints: tuple[tuple[float, float], ...] = field(default=())

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """The box's larger side: what minimum sizes and crop margins are measured on."""
        return max(self.width, self.height)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


class FaceDetector(ABC):
    """Finds faces in an RGB image. Deterministic: the same pixels give the same faces."""

    name: str = ""

    @abstractmethod
    def detect(self, rgb: np.ndarray) -> list[Face]:
        """uint8 HxWx3 RGB -> faces, most confident first."""

    def close(self) -> None:  # noqa: B027 (optional hook: detectors holding nothing native need not override)
        """Release native resources."""


D = TypeVar("D", bound=type[FaceDetector])
_DETECTORS: dict[str, Callable[..., FaceDetector]] = {}


def register_detector(name: str) -> Callable[[D], D]:
    """Class decorator: make a detector available to `create_detector(name)`."""
    def add(cls: D) -> D:
        cls.name = name
        _DETECTORS[name] = cls
        return cls
    return add


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def suppress(faces: list[Face], overlap: float = 0.3) -> list[Face]:
    """Greedy non-maximum suppression: keep the most confident of faces overlapping by IoU > `overlap`, or
    lying (almost) within one another (a face found at two scales, or a face part found as a face)."""
    order = sorted(range(len(faces)), key=lambda i: (-faces[i].score, faces[i].box))
    boxes = np.array([faces[i].box for i in order], dtype=np.float64).reshape(-1, 4)
    return [faces[order[i]] for i in nms(boxes, overlap)]


def nms(boxes: np.ndarray, overlap: float = 0.3) -> list[int]:
    """Indices kept by greedy suppression of [N, 4] boxes sorted most confident first (see `suppress`)."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = np.ones(len(boxes), dtype=bool)
    kept = []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        kept.append(i)
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        if not len(rest):
            break
        b = boxes[rest]
        ix = np.clip(np.minimum(b[:, 2], boxes[i, 2]) - np.maximum(b[:, 0], boxes[i, 0]), 0, None)
        iy = np.clip(np.minimum(b[:, 3], boxes[i, 3]) - np.maximum(b[:, 1], boxes[i, 1]), 0, None)
        inter = ix * iy
        union = areas[rest] + areas[i] - inter
        small = np.minimum(areas[rest], areas[i])
        with np.errstate(divide="ignore", invalid="ignore"):
            same = (union > 0) & (inter / union > overlap)
            inside = (small > 0) & (inter / small > 0.7)
        alive[rest[same | inside]] = False
    return kept
