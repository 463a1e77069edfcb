"""A small generated detection task: "fake" media carry a faint planted pattern, "real" media do not.

For tests, demos and benchmarks of training and evaluation without any real data set. Every item is a
textured `samples.pattern` picture (random phase, position and time; +-100 grey levels) with sensor-like
noise (sigma 8); fakes add a faint diagonal grating (10 grey levels, period 8 px, so it lines up with
ConvNeXt's 4-px patches) that survives flips and JPEG, so a tiny roster learns it on CPU in seconds
while random weights score it at chance.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from mffmoe.testing.media import encode_video, pattern


def planted(height: int, width: int, period: float = 8.0, amplitude: float = 10.0) -> np.ndarray:
    """The faint signature: a diagonal grating of `amplitude` grey levels, in every channel."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return amplitude * np.sin(2 * np.pi * (x + y) / period)[..., None]


def synth_frame(rng: np.random.Generator, width: int, height: int, fake: bool, t: int = 0,
                amplitude: float = 10.0, noise: float = 8.0, seed: int | None = None) -> np.ndarray:
    """One uint8 HWC RGB picture of the task (`seed`/`t` pick the background; noise is fresh)."""
    seed = int(rng.integers(0, 1_000_000)) if seed is None else seed
    img = pattern(width, height, t=t, seed=seed).astype(np.float32)
    img += rng.normal(0.0, noise, img.shape).astype(np.float32)
    if fake:
        img += planted(height, width, amplitude=amplitude)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_video(path: str | os.PathLike[str], frames: list[np.ndarray], fps: int = 10) -> Path:
    """Encode frames near-losslessly (H.264, CRF 12) into an MP4, so the planted pattern survives."""
    return encode_video(path, frames, fps, "libx264", options={"crf": "12"})


def make_planted_dataset(out: str | os.PathLike[str], n_real: int = 32, n_fake: int = 32, size: int = 64,
                         videos_per_class: int = 0, frames_per_video: int = 12, amplitude: float = 10.0,
                         seed: int = 0) -> Path:
    """Write `out/real/*.png`, `out/fake/*.png` (and `*.mp4` videos if asked) for the planted task."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    for name, fake, n in (("real", False, n_real), ("fake", True, n_fake)):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = synth_frame(rng, size, size, fake, t=int(rng.integers(0, 200)), amplitude=amplitude)
            Image.fromarray(arr).save(folder / f"{name}_{i:04d}.png")
        for v in range(videos_per_class):
            bg = int(rng.integers(0, 1_000_000))
            frames = [synth_frame(rng, size, size, fake, t=t, amplitude=amplitude, seed=bg)
                      for t in range(frames_per_video)]
            write_video(folder / f"{name}_video_{v:03d}.mp4", frames)
    return out
