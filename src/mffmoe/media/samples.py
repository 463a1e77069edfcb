"""Deterministic natural-looking pictures made in code: textured frames with a moving block, and "dead
leaves" pictures.

They stand in for real media where the library needs inputs of its own: checking that an exported engine
computes what torch does (`engine.calibrate`), on activations in the range real images give (random
noise drives a network with measured BatchNorm statistics far out of range, where engines "disagree" on
numbers no image would produce). Test media and `mffmoe sample` are made from them too.

The sine frames are smooth: statistics measured on them alone (BatchNorm of a random network, int8
quantisation ranges) leave out the fine texture and sharp edges of photographs, whose activations then
grow layer by layer (a random EfficientNet-B4 measured on them gave median logits of 2.5e4 on
photographs, 3 on the frames). `leaves_frame` adds that content: occluding discs with power-law radii,
the classic model of natural images' scale-invariant edges and 1/f spectrum. `natural_batch` mixes both.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

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


def leaves_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic "dead leaves" RGB uint8 picture: discs of palette colours, radii with density ~r^-3
    from 2 px to a third of the frame, drawn over each other; sometimes blurred, always with sensor noise."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (int(rng.integers(2, 8)), 3))
    spread = rng.uniform(10, 80)
    image = Image.new("RGB", (width, height), tuple(int(v) for v in palette[0]))
    draw = ImageDraw.Draw(image)
    n = int(rng.integers(3000, 8000) * width * height / (640 * 480))
    r_min, r_max = 2.0, max(width, height) / 3
    radii = (r_min ** -2 + rng.random(n) * (r_max ** -2 - r_min ** -2)) ** -0.5  # inverse CDF of r^-3
    cx, cy = rng.uniform(0, width, n), rng.uniform(0, height, n)
    colours = np.clip(palette[rng.integers(len(palette), size=n)] + rng.normal(0, spread, (n, 3)), 0, 255)
    if rng.random() < 0.2:
        colours[:] = colours[:, :1]  # grey
    order = np.argsort(-radii) if rng.random() < 0.5 else np.arange(n)  # big first, or any order
    for i in order:
        draw.ellipse((cx[i] - radii[i], cy[i] - radii[i], cx[i] + radii[i], cy[i] + radii[i]),
                     fill=tuple(int(v) for v in colours[i]))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 2.0))))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(0, 12), (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


#: Frame shapes `natural_batch` cycles through (landscape, portrait, square, 720p), so the resize varies.
SHAPES = ((640, 480), (480, 640), (512, 512), (1280, 720))


def natural_frame(i: int, seed: int = 0) -> np.ndarray:
    """Picture `i` of a natural-looking set: sine frames and dead leaves alternately, in `SHAPES` in turn."""
    width, height = SHAPES[(i // 2) % len(SHAPES)]
    if i % 2:
        return leaves_frame(width, height, seed=seed + i)
    return sample_frame(width, height, t=seed + i, seed=seed + i)


def natural_batch(n: int, input_size: int, seed: int = 0) -> np.ndarray:
    """`n` pictures of `natural_frame` through the spec's preprocessing: float32 [n, 3, S, S]."""
    return np.stack([preprocess(natural_frame(i, seed), input_size) for i in range(n)])


def sample_batch(n: int, input_size: int, seed: int = 0, width: int = 640, height: int = 480) -> np.ndarray:
    """`n` different sample frames through the spec's preprocessing: float32 [n, 3, S, S]."""
    return np.stack([preprocess(sample_frame(width, height, t=seed + i, seed=seed + i), input_size)
                        for i in range(n)])
