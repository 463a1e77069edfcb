"""The decoding stage: a file in, a stream of parts out (an image, or a video's sampled frames one by
one, then its summary). It runs on worker processes (local scans) or Ray tasks and decodes with
`mffmoe.media.source`, as `Detector.analyze` does, so scan rows equal analyze results.

Pixels cross the process boundary as the normalised float32 model input ([3, S, S]): preprocessing must
equal the spec's transform to 1e-5, and it resizes in float, so the decoded frame cannot be sent smaller.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mffmoe.config import DetectorConfig
from mffmoe.errors import ErrorInfo, MFFMoEError
from mffmoe.media.source import VideoItem, open_media

#: Part kinds. Parts with pixels go through the model; the others carry what assembling needs.
IMAGE, FRAME, FRAME_ERROR, VIDEO_END, ERROR = "image", "frame", "frame_error", "video_end", "error"


@dataclass(frozen=True)
class DecodeConfig:
    input_size: int
    frames: int
    max_image_pixels: int | None = None

    @classmethod
    def of(cls, config: DetectorConfig, input_size: int) -> DecodeConfig:
        """What decoding needs of a detector configuration (`input_size` is the weights')."""
        return cls(input_size, config.frames, config.max_image_pixels)


@dataclass
class Part:
    key: str                                  # the input's path
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    pixels: np.ndarray | None = None          # [3, S, S] float32, normalised, for IMAGE and FRAME
    experts: np.ndarray | None = None         # [E] per-expert P(fake), once scored
    seconds: float = 0.0                      # decode (+ inference share, once scored) time of this part


def _error(key: str, error: BaseException, seconds: float) -> Part:
    return Part(key, ERROR, ErrorInfo.of(error).to_dict(), seconds=seconds)


def decode_file(path: str, cfg: DecodeConfig) -> Iterator[Part]:
    """Yield the parts of one file. Never raises for a bad file: failures are ERROR parts (or a
    VIDEO_END carrying the error, once some frames were sent)."""
    start = time.perf_counter()
    try:
        item = open_media(path, cfg.input_size, cfg.frames, cfg.max_image_pixels)
    except MFFMoEError as e:
        yield _error(path, e, time.perf_counter() - start)
        return
    if not isinstance(item, VideoItem):
        yield Part(path, IMAGE, item.dimensions, item.pixels.numpy(), seconds=item.seconds)
        return
    sent = 0
    error: ErrorInfo | None = None
    mark = time.perf_counter()
    try:
        with item:
            for frame in item.frames():
                where = {"frame_index": frame.frame_index, "timestamp": frame.timestamp}
                if frame.pixels is None:
                    part = Part(path, FRAME_ERROR, {**where, "error": frame.error})
                else:
                    part = Part(path, FRAME, where, frame.pixels.numpy())
                now = time.perf_counter()
                part.seconds, mark = now - mark, now
                sent += 1
                yield part
    except MFFMoEError as e:
        error = ErrorInfo.of(e)
    meta: dict[str, Any] = {"parts": sent}
    if error is not None:
        meta["error"] = asdict(error)
    else:
        meta["summary"] = item.summary.to_dict()
    yield Part(path, VIDEO_END, meta, seconds=time.perf_counter() - mark)


# -- columnar form, for Ray Data ---------------------------------------------------------------------
def to_columns(parts: list[Part]) -> dict[str, np.ndarray]:
    """Parts as a batch of columns (pixels and expert scores as raw bytes, so every row has one schema)."""
    return {
        "key": np.array([p.key for p in parts], dtype=object),
        "kind": np.array([p.kind for p in parts], dtype=object),
        "meta": np.array([json.dumps(p.meta) for p in parts], dtype=object),
        "pixels": np.array([b"" if p.pixels is None else np.ascontiguousarray(p.pixels, np.float32).tobytes()
                            for p in parts], dtype=object),
        "experts": np.array([b"" if p.experts is None else np.asarray(p.experts, np.float64).tobytes()
                             for p in parts], dtype=object),
        "seconds": np.array([p.seconds for p in parts], dtype=np.float64),
    }


def from_columns(batch: dict[str, np.ndarray], input_size: int | None = None) -> list[Part]:
    parts = []
    for i in range(len(batch["key"])):
        pixels = experts = None
        raw = batch["pixels"][i]
        if len(raw):
            if input_size is None:
                raise ValueError("pixels need the input size to be read back")
            pixels = np.frombuffer(raw, dtype=np.float32).reshape(3, input_size, input_size)
        if len(batch["experts"][i]):
            experts = np.frombuffer(batch["experts"][i], dtype=np.float64)
        parts.append(Part(str(batch["key"][i]), str(batch["kind"][i]), json.loads(batch["meta"][i]),
                          pixels, experts, float(batch["seconds"][i])))
    return parts
