"""A media file, decoded once, the same way for every caller: `Detector.analyze`/`analyze_many`, scan
workers (`scan/decode.py`) and training data (`train/data.py`).

`open_media` probes the file by content and gives an `ImageItem` (the preprocessed tensor, its size and
the decode time) or a `VideoItem` (its sampled frames one by one, then a `VideoSummary`). Failures follow
one policy: the typed `MFFMoEError`s of the decoders pass through; anything else (a decoder bug, an
exotic file) becomes an `UnexpectedDecodeError` while opening, or a `VideoDecodeError` while sampling,
so one bad file is an error result and never ends a batch. Those unexpected ones are logged with their
traceback (logger `mffmoe.media`): they point at a decoder bug or a case to type properly.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
from PIL import Image

from mffmoe.errors import MFFMoEError, UnexpectedDecodeError, VideoDecodeError
from mffmoe.media import preprocess as preprocess_module
from mffmoe.media.image import image_jpeg_quality, open_image
from mffmoe.media.preprocess import preprocess
from mffmoe.media.probe import MediaKind, probe_kind
from mffmoe.media.video import SampledFrame, VideoSampler, VideoSummary

T = TypeVar("T")
E = TypeVar("E", bound=MFFMoEError)

#: The model input of an item or face once it is stacked into a batch or no longer needed (3 MB each
#: otherwise): results keep everything else.
NO_INPUT = np.zeros(0, dtype=np.float32)

log = logging.getLogger("mffmoe.media")


def unexpected(cls: type[E], path: str | os.PathLike[str], error: BaseException, doing: str) -> E:
    """The typed error for an exception no decoder typed, logged with its traceback."""
    log.warning("%s: unexpected %s while %s", path, type(error).__name__, doing, exc_info=error)
    return cls(f"{path}: {doing} failed unexpectedly ({type(error).__name__}: {error})")


@dataclass(frozen=True)
class ImageItem:
    path: str
    pixels: np.ndarray           # [3, S, S] float32, normalised
    width: int
    height: int
    seconds: float               # probe + decode + preprocess
    faces: tuple[Any, ...] | None = None  # faces mode: `look`'s findings (faces.finder.FaceInput); None: not looked
    faces_note: str | None = None               # faces mode: why faces were not looked for
    jpeg_quality: int | None = None             # a JPEG's estimated quality (media.image.jpeg_quality)

    @property
    def dimensions(self) -> dict[str, int]:
        return {"width": self.width, "height": self.height}


@dataclass(frozen=True)
class Frame:
    """A sampled video frame, preprocessed; `pixels` is None (and `error` says why) when it failed."""

    frame_index: int
    timestamp: float
    pixels: np.ndarray | None
    error: str | None = None


class VideoItem:
    """An opened video. Iterate `frames()` (preprocessed) or `samples()` (RGB arrays) once; `summary`
    then holds the final frame indices. Close it (or use it as a context manager) when done."""

    def __init__(self, path: str, sampler: VideoSampler, input_size: int | None = None) -> None:
        self.path = path
        self.sampler = sampler
        self.input_size = input_size

    @property
    def planned(self) -> list[int]:
        """The frame indices as they stand now (final once iteration has ended)."""
        return self.sampler.indices

    @property
    def summary(self) -> VideoSummary:
        if self.sampler.summary is None:
            raise RuntimeError(f"{self.path}: the video's frames have not all been read yet")
        return self.sampler.summary

    def samples(self) -> Iterator[SampledFrame]:
        """The sampled frames as decoded (uint8 RGB, rotation applied)."""
        try:
            yield from self.sampler
        except MFFMoEError:
            raise
        except Exception as e:
            raise unexpected(VideoDecodeError, self.path, e, "decoding") from e

    def frames(self) -> Iterator[Frame]:
        """The sampled frames, preprocessed to the model's input (needs `input_size`)."""
        if self.input_size is None:
            raise ValueError("frames() needs the input size; open the video with one")
        for sample in self.samples():
            pixels = None
            if sample.image is not None:
                try:
                    pixels = preprocess(sample.image, self.input_size)
                except Exception as e:
                    raise unexpected(VideoDecodeError, self.path, e, "preprocessing a frame") from e
            yield Frame(sample.frame_index, sample.timestamp, pixels, sample.error)

    def close(self) -> None:
        self.sampler.close()

    def __enter__(self) -> VideoItem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video(path: str | os.PathLike[str], n_frames: int, input_size: int | None = None) -> VideoItem:
    """Open a video (known to be one) for sampling `n_frames` frames."""
    try:
        return VideoItem(str(path), VideoSampler(path, n_frames), input_size)
    except MFFMoEError:
        raise
    except Exception as e:
        raise unexpected(UnexpectedDecodeError, path, e, "opening the video") from e


def open_media(path: str | os.PathLike[str], input_size: int, n_frames: int, max_pixels: int | None = None,
               kind: MediaKind | None = None, look: Callable[[np.ndarray], Sequence[Any]] | None = None,
               ) -> ImageItem | VideoItem:
    """Probe `path` (unless its `kind` is known) and decode it: an image completely, a video up to its
    first frame. `look` sees a decoded image's uint8 RGB pixels before they are freed (the faces step:
    `FaceFinder.find`); what it returns is kept as the item's `faces`. Raises a typed MFFMoEError for a
    file that cannot be analyzed."""
    start = time.perf_counter()
    try:
        kind = kind or probe_kind(path)
        if kind is MediaKind.VIDEO:
            return open_video(path, n_frames, input_size)
        faces: tuple[Any, ...] | None = None
        note = None
        with _huge_image_slot(path) as quality:
            image = open_image(path, max_pixels)
            pixels = preprocess(image, input_size)
            width, height = image.size
            if look is not None and isinstance(image, Image.Image):
                faces = tuple(look(np.asarray(image)))
            elif look is not None:
                note = (f"faces were not looked for: images over {preprocess_module.STRIP_PIXELS:,} pixels are "
                        "read in strips and never held whole")
            del image  # the decoded pixels go now, not when the caller is done with the item
        return ImageItem(str(path), pixels, width, height, time.perf_counter() - start, faces, note, quality)
    except MFFMoEError:
        raise
    except Exception as e:  # a decoder bug or an exotic failure: an error that says so, not a crash
        raise unexpected(UnexpectedDecodeError, path, e, "decoding") from e


_HUGE_IMAGES = threading.Lock()


@contextmanager
def _huge_image_slot(path: str | os.PathLike[str]) -> Iterator[int | None]:
    """Decode at most one huge image (over `preprocess.STRIP_PIXELS`) at a time, whatever the number of
    decoding threads: each holds its decoded pixels (3 bytes each) until it is resized. Yields the JPEG
    quality read from the header (None for other formats), for the scope checks."""
    quality = None
    try:
        with Image.open(path) as header:  # the header only (a JPEG's tables included)
            huge = header.width * header.height > preprocess_module.STRIP_PIXELS
            quality = image_jpeg_quality(header)
    except Exception:  # not an image after all: open_image says why
        huge = False
    if not huge:
        yield quality
        return
    try:
        with _HUGE_IMAGES:
            yield quality
    finally:
        release_freed_memory()


def release_freed_memory() -> None:
    """Give freed heap memory back to the system. A huge image's decoded pixels come in blocks that glibc
    keeps for reuse once freed, so the process would hold its peak long after; elsewhere a no-op."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


# -- decoding ahead ------------------------------------------------------------------------------
class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


@contextmanager
def decode_ahead(items: Iterator[T], depth: int) -> Iterator[Iterator[T]]:
    """Run `items` on a thread, at most `depth` items ahead of the consumer, so decoding overlaps
    whatever the consumer does with them (inference). Errors reach the consumer; leaving the block
    stops the thread."""
    q: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    break
                q.put(item)
        except BaseException as e:  # handed to the consumer, never swallowed
            q.put(_Raised(e))
        finally:
            q.put(_END)

    def consume() -> Iterator[T]:
        while True:
            got = q.get()
            if got is _END:
                return
            if isinstance(got, _Raised):
                raise got.error
            yield cast(T, got)

    worker = threading.Thread(target=produce, name="mffmoe-decode-ahead", daemon=True)
    worker.start()
    try:
        yield consume()
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with suppress(queue.Empty):
                q.get(timeout=0.05)
