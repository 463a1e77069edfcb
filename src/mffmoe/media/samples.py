"""Deterministic natural-looking pictures made in code: textured frames with a moving block.

They stand in for real media where the library needs inputs of its own: checking that an exported engine
computes what torch does (`engine.calibrate`), on activations in the range real images give (random
noise drives a network with measured BatchNorm statistics far out of range, where engines "disagree" on
numbers no image would produce). Test media and `mffmoe sample` are made from them too.
"""
from __future__ import annotations

import numpy as np

from mffmoe.media.preprocess import preprocess


def sample_frame(width: int, height: int, t: int = 0, seed: int = 0) -> np.ndarray:
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


def sample_batch(n: int, input_size: int, seed: int = 0, width: int = 640, height: int = 480) -> np.ndarray:
    """`n` different sample frames through the spec's preprocessing: float32 [n, 3, S, S]."""
    return np.stack([preprocess(sample_frame(width, height, t=seed + i, seed=seed + i), input_size)
                        for i in range(n)])
