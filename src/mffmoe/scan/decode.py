"""The decoding stage: a file in, a stream of parts out (an image, or a video's sampled frames one by
one, then its summary). It runs on worker processes (local scans) or Ray tasks and decodes with
`mffmoe.media.source`, as `Detector.analyze` does, so scan rows equal analyze results.

In faces and auto modes the faces step runs here too, on the decoding side as in `analyze`: a `FaceFinder`
(one per process, built on first use) finds each image's or frame's faces, and a part then carries one
model input per face (its crop), or the whole frame when there is none. What assembling needs of each face
travels with it: its box, detector score and crop box, and for video frames its appearance (tracking) and
its thumbnail (a person's picture).

Pixels cross the process boundary as the normalised float32 model inputs ([K, 3, S, S]): preprocessing
must equal the spec's transform to 1e-5, and it resizes in float, so the decoded frame cannot be sent
smaller.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mffmoe.config import (
    DEFAULT_FACE_DETECTOR,
    DEFAULT_FACE_MARGIN,
    DEFAULT_MAX_FACES,
    DEFAULT_MIN_FACE,
    DetectorConfig,
)
from mffmoe.errors import ErrorInfo, MFFMoEError, VideoDecodeError
from mffmoe.faces.finder import THUMBNAIL, FaceFinder, FaceInput
from mffmoe.faces.tracks import appearance
from mffmoe.inference.batching import stack
from mffmoe.media.preprocess import preprocess
from mffmoe.media.source import VideoItem, open_media, unexpected

#: Part kinds. Parts with pixels go through the model; the others carry what assembling needs.
IMAGE, FRAME, FRAME_ERROR, VIDEO_END, ERROR = "image", "frame", "frame_error", "video_end", "error"


@dataclass(frozen=True)
class DecodeConfig:
    """What decoding needs: the model's input size, the sampling, and the faces step (`crop`, resolved:
    frame | faces | auto, and the face finder's settings, as `Detector.from_config` builds its finder)."""

    input_size: int
    frames: int
    max_image_pixels: int | None = None
    crop: str = "frame"
    face_margin: float = DEFAULT_FACE_MARGIN
    align: bool = False
    min_face: int = DEFAULT_MIN_FACE
    max_faces: int = DEFAULT_MAX_FACES
    face_detector: str = DEFAULT_FACE_DETECTOR

    @classmethod
    def of(cls, config: DetectorConfig, input_size: int) -> DecodeConfig:
        """What decoding needs of a detector configuration (`input_size` is the weights'; the crop mode
        must be resolved already: see `scan.job.resolve_crop`)."""
        c = config
        if c.crop is None or c.face_margin is None or c.align is None or c.min_face is None:
            raise ValueError("the crop mode or face settings are not resolved (None means the weights' own: "
                             "resolve them first)")
        return cls(input_size, c.frames, c.max_image_pixels, c.crop, c.face_margin, c.align, c.min_face,
                   c.max_faces, c.face_detector)


@dataclass
class Part:
    key: str                                  # the input's path
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    pixels: np.ndarray | None = None          # [K, 3, S, S] float32, normalised, for IMAGE and FRAME: the K
    #                                           faces' crops (faces mode, largest first), else the whole frame
    experts: np.ndarray | None = None         # [K, E] per-expert P(fake) of those inputs, once scored
    seconds: float = 0.0                      # decode (+ inference share, once scored) time of this part
    thumbs: np.ndarray | None = None          # [F, T, T, 3] uint8: a video frame's face thumbnails (faces mode)

    @property
    def inputs(self) -> int:
        """Model inputs in this part."""
        if self.pixels is not None:
            return len(self.pixels)
        return 0 if self.experts is None else len(self.experts)


def _error(key: str, error: BaseException, seconds: float) -> Part:
    return Part(key, ERROR, ErrorInfo.of(error).to_dict(), seconds=seconds)


# -- the faces step ----------------------------------------------------------------------------------
_FINDERS: dict[tuple[Any, ...], FaceFinder] = {}
_FINDERS_LOCK = threading.Lock()


def finder_for(cfg: DecodeConfig) -> FaceFinder | None:
    """This process's face finder for `cfg` (None in frame mode), built on first use as
    `Detector.from_config` builds its own, and kept for the next files."""
    if cfg.crop == "frame":
        return None
    key = (cfg.face_detector, cfg.face_margin, cfg.align, cfg.min_face, cfg.max_faces)
    with _FINDERS_LOCK:
        finder = _FINDERS.get(key)
        if finder is None:
            finder = _FINDERS[key] = FaceFinder(cfg.face_detector, margin=cfg.face_margin, align=cfg.align,
                                                min_face=cfg.min_face, max_faces=cfg.max_faces)
        return finder


def face_meta(face: FaceInput, look: np.ndarray | None = None) -> dict[str, Any]:
    """What assembling needs of a found face (JSON-safe, exact: floats survive JSON unchanged)."""
    c = face.crop
    meta: dict[str, Any] = {"box": [float(v) for v in c.face.box], "score": float(c.face.score),
                            "keypoints": [[float(x), float(y)] for x, y in c.face.keypoints],
                            "crop_box": [int(v) for v in c.crop_box], "angle": float(c.angle)}
    if look is not None:
        meta["look"] = [float(v) for v in look]
    return meta


def decode_file(path: str, cfg: DecodeConfig) -> Iterator[Part]:
    """Yield the parts of one file. Never raises for a bad file: failures are ERROR parts (or a
    VIDEO_END carrying the error, once some frames were sent)."""
    start = time.perf_counter()
    try:
        finder = finder_for(cfg)
        look = None if finder is None else (lambda rgb: finder.find(rgb, cfg.input_size))  # = Detector.look
        item = open_media(path, cfg.input_size, cfg.frames, cfg.max_image_pixels, look=look)
    except MFFMoEError as e:
        yield _error(path, e, time.perf_counter() - start)
        return
    if not isinstance(item, VideoItem):
        meta: dict[str, Any] = dict(item.dimensions)
        if item.jpeg_quality is not None:
            meta["jpeg_quality"] = item.jpeg_quality  # for the scope checks
        if finder is not None:
            meta["faces"] = [face_meta(f) for f in item.faces or ()]
            if item.faces_note:
                meta["faces_note"] = item.faces_note
        pixels = stack([f.pixels for f in item.faces]) if item.faces else stack([item.pixels])
        yield Part(path, IMAGE, meta, pixels, seconds=item.seconds)
        return
    sent = 0
    error: ErrorInfo | None = None
    mark = time.perf_counter()
    try:
        with item:
            for part in (_frame_parts(item) if finder is None else _face_frame_parts(item, finder, cfg.input_size)):
                now = time.perf_counter()
                part.seconds, mark = now - mark, now
                sent += 1
                yield part
    except MFFMoEError as e:
        error = ErrorInfo.of(e)
    meta = {"parts": sent}
    if error is not None:
        meta["error"] = asdict(error)
    else:
        meta["summary"] = item.summary.to_dict()
    yield Part(path, VIDEO_END, meta, seconds=time.perf_counter() - mark)


def _frame_parts(item: VideoItem) -> Iterator[Part]:
    """Frame mode: each sampled frame, preprocessed whole."""
    for frame in item.frames():
        where = {"frame_index": frame.frame_index, "timestamp": frame.timestamp}
        if frame.pixels is None:
            yield Part(item.path, FRAME_ERROR, {**where, "error": frame.error})
        else:
            yield Part(item.path, FRAME, where, stack([frame.pixels]))


def _face_frame_parts(item: VideoItem, finder: FaceFinder, input_size: int) -> Iterator[Part]:
    """Faces mode, as `inference.faces.score_video_faces` samples: each frame's faces (their crops, looks
    and thumbnails), or the whole frame when it has none."""
    for s in item.samples():
        where = {"frame_index": s.frame_index, "timestamp": s.timestamp}
        if s.image is None:
            yield Part(item.path, FRAME_ERROR, {**where, "error": s.error or "frame not decoded"})
            continue
        try:
            faces = finder.find(s.image, input_size)
            looks = [appearance(f.crop.pixels) for f in faces]
            thumbs = np.stack([np.asarray(f.thumbnail()) for f in faces]) if faces else None
            pixels = stack([f.pixels for f in faces]) if faces else stack([preprocess(s.image, input_size)])
        except MFFMoEError:
            raise
        except Exception as e:
            raise unexpected(VideoDecodeError, item.path, e, "finding the faces of a frame") from e
        meta = {**where, "faces": [face_meta(f, v) for f, v in zip(faces, looks, strict=True)]}
        yield Part(item.path, FRAME, meta, pixels, thumbs=thumbs)


# -- columnar form, for Ray Data ---------------------------------------------------------------------
def to_columns(parts: list[Part]) -> dict[str, np.ndarray]:
    """Parts as a batch of columns (pixels, expert scores and thumbnails as raw bytes, so every row has one
    schema; `rows` is each part's number of model inputs)."""
    return {
        "key": np.array([p.key for p in parts], dtype=object),
        "kind": np.array([p.kind for p in parts], dtype=object),
        "meta": np.array([json.dumps(p.meta) for p in parts], dtype=object),
        "rows": np.array([p.inputs for p in parts], dtype=np.int64),
        "pixels": np.array([b"" if p.pixels is None else np.ascontiguousarray(p.pixels, np.float32).tobytes()
                            for p in parts], dtype=object),
        "experts": np.array([b"" if p.experts is None else np.ascontiguousarray(p.experts, np.float64).tobytes()
                             for p in parts], dtype=object),
        "thumbs": np.array([b"" if p.thumbs is None else np.ascontiguousarray(p.thumbs, np.uint8).tobytes()
                            for p in parts], dtype=object),
        "seconds": np.array([p.seconds for p in parts], dtype=np.float64),
    }


def from_columns(batch: dict[str, np.ndarray], input_size: int | None = None) -> list[Part]:
    parts = []
    for i in range(len(batch["key"])):
        pixels = experts = thumbs = None
        raw = batch["pixels"][i]
        if len(raw):
            if input_size is None:
                raise ValueError("pixels need the input size to be read back")
            pixels = np.frombuffer(raw, dtype=np.float32).reshape(-1, 3, input_size, input_size)
        if len(batch["experts"][i]):
            experts = np.frombuffer(batch["experts"][i], dtype=np.float64).reshape(int(batch["rows"][i]), -1)
        if len(batch["thumbs"][i]):
            thumbs = np.frombuffer(batch["thumbs"][i], dtype=np.uint8).reshape(-1, THUMBNAIL, THUMBNAIL, 3)
        parts.append(Part(str(batch["key"][i]), str(batch["kind"][i]), json.loads(batch["meta"][i]),
                          pixels, experts, float(batch["seconds"][i]), thumbs))
    return parts
