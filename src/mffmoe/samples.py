"""Synthetic sample media (images and videos) for the demo, the tests and the benchmarks.

PyAV's wheels carry libx264, libx265, libvpx-vp9 and mjpeg, so any codec/container case can be made
here instead of shipping binary fixtures.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

CODECS = {  # codec -> (container format, pixel format)
    "h264": ("mp4", "yuv420p"),
    "libx264": ("mp4", "yuv420p"),
    "hevc": ("mp4", "yuv420p"),
    "libx265": ("mp4", "yuv420p"),
    "libvpx-vp9": ("webm", "yuv420p"),
    "mjpeg": ("avi", "yuvj420p"),
}


def pattern(width: int, height: int, t: int = 0, seed: int = 0) -> np.ndarray:
    """A deterministic, textured RGB uint8 frame that changes with `t` (so every frame differs)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 3)
    r = 127 + 100 * np.sin(x / (17 + seed % 5) + t * 0.21 + phase[0])
    g = 127 + 100 * np.sin(y / 13 - t * 0.17 + phase[1])
    b = 127 + 100 * np.sin((x + y) / 29 + t * 0.11 + phase[2])
    img = np.stack([r, g, b], axis=-1)
    # a moving square, so seeking errors show up as a different picture
    s = max(4, min(width, height) // 6)
    cx = int((t * 7) % max(1, width - s))
    cy = int((t * 3) % max(1, height - s))
    img[cy:cy + s, cx:cx + s] = (255 - (t * 5) % 256, (t * 11) % 256, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image(path: str | os.PathLike[str], width: int = 640, height: int = 480, seed: int = 0,
               mode: str = "RGB", **save_kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pattern(width, height, seed=seed, t=seed))
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, **save_kwargs)
    return path


def make_video(path: str | os.PathLike[str], seconds: float = 2.0, fps: int = 25, width: int = 320,
               height: int = 240, codec: str = "libx264", gop: int | None = None, rotation: int = 0,
               container_format: str | None = None, seed: int = 0) -> Path:
    """Encode a synthetic video. `rotation` (degrees counter-clockwise, as PyAV's `VideoFrame.rotation`
    reads it back) is written as display-matrix metadata; players turn the frames by it."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, pix_fmt = CODECS.get(codec, ("mp4", "yuv420p"))
    n = max(1, round(seconds * fps))
    with av.open(str(path), mode="w", format=container_format or fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        options = {}
        if gop:
            stream.codec_context.gop_size = gop
            if codec in ("libx264", "h264"):
                options.update({"keyint_min": str(gop), "sc_threshold": "0"})
            if codec in ("libx265", "hevc"):
                options["x265-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error"
        if codec in ("libx265", "hevc") and "x265-params" not in options:
            options["x265-params"] = "log-level=error"
        if codec in ("libx264", "h264", "libx265", "hevc"):
            options.setdefault("preset", "ultrafast")
        if codec == "libvpx-vp9":
            options.update({"deadline": "realtime", "cpu-used": "8"})
        stream.options = options
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(width, height, t=i, seed=seed), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
