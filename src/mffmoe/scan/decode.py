"""The decoding stage: a file in, a stream of parts out (an image, or a video's sampled frames one by
one, then a summary). It runs on worker processes (local scans) or Ray tasks, and does exactly what
`Detector.analyze` does before inference, with the same functions, so scan rows equal analyze results.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import numpy as np

from mffmoe.errors import (
    ErrorInfo,
    MFFMoEError,
    UnexpectedDecodeError,
    VideoDecodeError,
)
from mffmoe.media.image import load_image
from mffmoe.media.preprocess import preprocess
from mffmoe.media.probe import MediaKind, probe_kind
from mffmoe.media.video import VideoSampler

#: Part kinds. Parts with pixels go through the model; the others carry what assembling needs.
IMAGE, FRAME, FRAME_ERROR, VIDEO_END, ERROR = "image", "frame", "frame_error", "video_end", "error"


@dataclass(frozen=True)
class DecodeConfig:
    input_size: int
    frames: int
    max_image_pixels: int | None = None


@dataclass
class Part:
    key: str                                  # the input's path
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    pixels: np.ndarray | None = None          # [3, S, S] float32, normalised, for IMAGE and FRAME
    experts: np.ndarray | None = None         # [E] per-expert P(fake), once scored
    seconds: float = 0.0                      # decode (+ inference share, once scored) time of this part


def _error(key: str, error: BaseException, seconds: float) -> Part:
    rec = ErrorInfo.of(error)
    return Part(key, ERROR, {"type": rec.type, "kind": rec.kind, "message": rec.message}, seconds=seconds)


def decode_file(path: str, cfg: DecodeConfig) -> Iterator[Part]:
    """Yield the parts of one file. Never raises for a bad file: failures are ERROR parts (or a
    VIDEO_END carrying the error, once some frames were sent)."""
    start = time.perf_counter()
    try:
        kind = probe_kind(path)
        if kind is MediaKind.IMAGE:
            image = load_image(path, cfg.max_image_pixels)
            pixels = preprocess(image, cfg.input_size).numpy()
            yield Part(path, IMAGE, {"width": image.width, "height": image.height}, pixels,
                       seconds=time.perf_counter() - start)
            return
        sampler = VideoSampler(path, cfg.frames)
    except MFFMoEError as e:
        yield _error(path, e, time.perf_counter() - start)
        return
    except Exception as e:  # a decoder bug or an exotic failure: a row that says so, not a crashed scan
        yield _error(path, UnexpectedDecodeError(f"{path}: {type(e).__name__}: {e}"), time.perf_counter() - start)
        return
    sent = 0
    error: ErrorInfo | None = None
    mark = time.perf_counter()
    try:
        with sampler:
            for sample in sampler:
                if sample.image is None:
                    part = Part(path, FRAME_ERROR, {"frame_index": sample.frame_index,
                                                    "timestamp": sample.timestamp, "error": sample.error})
                else:
                    part = Part(path, FRAME, {"frame_index": sample.frame_index, "timestamp": sample.timestamp},
                                preprocess(sample.image, cfg.input_size).numpy())
                now = time.perf_counter()
                part.seconds, mark = now - mark, now
                sent += 1
                yield part
    except MFFMoEError as e:
        error = ErrorInfo.of(e)
    except Exception as e:  # as Detector._analyze_video words it
        error = ErrorInfo.of(VideoDecodeError(f"{path}: decoding failed ({type(e).__name__}: {e})"))
    meta: dict[str, Any] = {"parts": sent}
    if error is not None:
        meta["error"] = asdict(error)
    else:
        meta.update(indices=list(sampler.indices), total=sampler.total, count_exact=sampler.count_exact,
                    info=asdict(sampler.info))
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
