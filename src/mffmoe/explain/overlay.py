"""Overlay PNGs: the original picture, the map on top in colour (transparent where it is 0), the region the
model saw outlined, the peak marked, and a legend with the score and the method drawn on the picture.
The PNG keeps the picture's size, so it lines up with the original (the web page lays it over it)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mffmoe._util.fs import atomic_write
from mffmoe.errors import ConfigError

#: Colours of the scale, low to high (a dark-to-bright "inferno"-like ramp).
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)
MAX_ALPHA = 0.6


def colorize(values: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> uint8 [H, W, 3] on the ramp."""
    v = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(v).astype(int).clip(0, len(_RAMP) - 2)
    t = (v - low)[..., None]
    return np.rint(_RAMP[low] * (1 - t) + _RAMP[low + 1] * t).astype(np.uint8)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render(image: np.ndarray, full_map: np.ndarray, *, title: str, box: tuple[int, int, int, int] | None = None,
           peak: tuple[int, int] | None = None) -> Image.Image:
    """The overlay as an RGB image of the picture's size. `image` uint8 [H, W, 3], `full_map` [H, W]."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ConfigError(f"an overlay needs a uint8 [H, W, 3] picture, got {image.dtype} {image.shape}")
    if full_map.shape != image.shape[:2]:
        raise ConfigError(f"map of shape {full_map.shape} for a picture of {image.shape[:2]}")
    m = np.clip(full_map.astype(np.float32), 0.0, 1.0)[..., None]
    alpha = MAX_ALPHA * m
    blended = image.astype(np.float32) * (1 - alpha) + colorize(m[..., 0]).astype(np.float32) * alpha
    out = Image.fromarray(np.rint(blended).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    h, w = image.shape[:2]
    unit = max(1, min(w, h) // 100)
    if box is not None:
        draw.rectangle(box, outline=(0, 255, 255), width=unit)
    if peak is not None:
        x, y = peak
        r = 4 * unit
        draw.line((x - r, y, x + r, y), fill=(0, 255, 0), width=unit)
        draw.line((x, y - r, x, y + r), fill=(0, 255, 0), width=unit)
    _legend(draw, w, h, title)
    return out


def _legend(draw: ImageDraw.ImageDraw, w: int, h: int, title: str) -> None:
    """Title (score, label, method) at the top left; the colour scale with its meaning at the bottom."""
    size = max(8, min(w, h) // 28)
    font = _font(size)
    pad = max(1, size // 4)
    tb = draw.textbbox((pad, pad), title, font=font)
    draw.rectangle((0, 0, min(w, tb[2] + pad), tb[3] + pad), fill=(0, 0, 0))
    draw.text((pad, pad), title, fill=(255, 255, 255), font=font)
    label = "evidence for fake: low -> high"
    lb = draw.textbbox((0, 0), label, font=font)
    bar_w, bar_h = max(8, w // 4), max(4, size // 2)
    top = h - (lb[3] - lb[1]) - bar_h - 3 * pad
    draw.rectangle((0, top, min(w, max(bar_w, lb[2]) + 2 * pad), h), fill=(0, 0, 0))
    ramp = colorize(np.linspace(0.0, 1.0, bar_w))
    for i in range(bar_w):
        draw.line((pad + i, top + pad, pad + i, top + pad + bar_h), fill=tuple(int(c) for c in ramp[i]))
    draw.text((pad, top + bar_h + 2 * pad - lb[1]), label, fill=(255, 255, 255), font=font)


def write_png(picture: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write atomically (a half-written PNG never appears under the final name)."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        picture.save(f, format="PNG")
    return path
