"""Synthetic sample media (images and videos) for the demo, the tests and the benchmarks.

PyAV's wheels carry libx264, libx265, libvpx-vp9 and mjpeg, so any codec/container case can be made
here instead of shipping binary fixtures.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mffmoe.media.samples import sample_frame

CODECS = {  # codec -> (container format, pixel format)
    "h264": ("mp4", "yuv420p"),
    "libx264": ("mp4", "yuv420p"),
    "hevc": ("mp4", "yuv420p"),
    "libx265": ("mp4", "yuv420p"),
    "libvpx-vp9": ("webm", "yuv420p"),
    "mjpeg": ("avi", "yuvj420p"),
}


def pattern(width: int, height: int, t: int = 0, seed: int = 0) -> np.ndarray:
    """A deterministic, textured RGB uint8 frame that changes with `t` (`media.samples.sample_frame`)."""
    return sample_frame(width, height, t=t, seed=seed)


def make_image(path: str | os.PathLike[str], width: int = 640, height: int = 480, seed: int = 0,
               mode: str = "RGB", **save_kwargs: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pattern(width, height, seed=seed, t=seed))
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, **save_kwargs)
    return path


def encode_video(path: str | os.PathLike[str], frames: Iterable[np.ndarray], fps: int = 25,
                 codec: str = "libx264", gop: int | None = None, rotation: int = 0,
                 container_format: str | None = None, options: dict[str, str] | None = None) -> Path:
    """Encode RGB uint8 frames (all one size) into a video file: the one PyAV encoder of the project.
    `rotation` (degrees counter-clockwise, as PyAV's `VideoFrame.rotation` reads it back) is written as
    display-matrix metadata; `gop` forces a key frame every `gop` frames."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, pix_fmt = CODECS.get(codec, ("mp4", "yuv420p"))
    opts: dict[str, object] = {}
    if codec in ("libx265", "hevc"):
        opts["x265-params"] = "log-level=error"
        if gop:
            opts["x265-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error"
    if codec in ("libx264", "h264", "libx265", "hevc"):
        opts["preset"] = "ultrafast"
    if gop and codec in ("libx264", "h264"):
        opts.update({"keyint_min": str(gop), "sc_threshold": "0"})
    if codec == "libvpx-vp9":
        opts.update({"deadline": "realtime", "cpu-used": "8"})
    opts.update(options or {})
    with av.open(str(path), mode="w", format=container_format or fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        assert isinstance(stream, av.VideoStream)
        for n, array in enumerate(frames):
            if n == 0:
                stream.height, stream.width = array.shape[:2]
                stream.pix_fmt = pix_fmt
                if gop:
                    stream.codec_context.gop_size = gop
                stream.options = opts
                if rotation:
                    stream.set_display_rotation(rotation)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def make_video(path: str | os.PathLike[str], seconds: float = 2.0, fps: int = 25, width: int = 320,
               height: int = 240, codec: str = "libx264", gop: int | None = None, rotation: int = 0,
               container_format: str | None = None, seed: int = 0) -> Path:
    """A synthetic video of `pattern` frames (every frame differs)."""
    n = max(1, round(seconds * fps))
    frames = (pattern(width, height, t=i, seed=seed) for i in range(n))
    return encode_video(path, frames, fps, codec, gop, rotation, container_format)
