"""Maps back on the original picture: undo the model's resize (and, for a face, the crop).

The model sees its input resized to S x S without keeping the aspect ratio (the spec's transform), so a
map over the input is a map over the region the input was cut from, stretched: the whole picture in frame
mode, the crop square in faces mode (`faces.crops.crop_box`, which may leave the picture; the part
outside was black padding and is dropped here). Pure functions on arrays, so tests can check alignment.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mffmoe.errors import ConfigError

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Placement:
    """Where a model input came from: `box` (left, top, right, bottom) in original pixels, in a picture
    of `width` x `height`."""
    box: Box
    width: int
    height: int

    def __post_init__(self) -> None:
        left, top, right, bottom = self.box
        if right <= left or bottom <= top or self.width < 1 or self.height < 1:
            raise ConfigError(f"bad placement: box {self.box} in a {self.width}x{self.height} picture")

    @classmethod
    def frame(cls, width: int, height: int) -> Placement:
        """The whole picture (frame mode)."""
        return cls((0, 0, int(width), int(height)), int(width), int(height))

    @classmethod
    def crop(cls, box: Sequence[int], width: int, height: int) -> Placement:
        """A face crop square (`crop_box`)."""
        if len(box) != 4:
            raise ConfigError(f"a crop box has 4 values, got {list(box)}")
        left, top, right, bottom = (int(v) for v in box)
        return cls((left, top, right, bottom), int(width), int(height))


def as_map(values: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """A 2-D float32 array of finite values (a typed error otherwise)."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim != 2 or arr.size == 0 or not np.isfinite(arr).all():
        raise ConfigError(f"a map is a non-empty 2-D array of finite values, got shape {arr.shape}")
    return arr


def resize_map(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a 2-D map (Pillow's float planes; area-averaging when shrinking)."""
    arr = as_map(values)
    if arr.shape == (height, width):
        return arr.copy()
    plane = Image.fromarray(np.ascontiguousarray(arr), mode="F")
    return np.asarray(plane.resize((int(width), int(height)), Image.Resampling.BILINEAR), dtype=np.float32)


def small_map(values: np.ndarray, size: int) -> np.ndarray:
    """The map shrunk to size x size by area averaging, for JSON."""
    arr = as_map(values)
    h, w = arr.shape
    if h % size == 0 and w % size == 0:
        return arr.reshape(size, h // size, size, w // size).mean(axis=(1, 3))
    return resize_map(arr, size, size)


def full_size_map(values: np.ndarray | Sequence[Sequence[float]], placement: Placement) -> np.ndarray:
    """The map over `placement.box` as a [height, width] map of the original picture: stretched to the
    box (undoing the model's resize), pasted at the box's position, the part outside the picture dropped,
    zero where the model saw nothing of the picture."""
    arr = as_map(values)
    left, top, right, bottom = placement.box
    region = resize_map(arr, right - left, bottom - top)
    out = np.zeros((placement.height, placement.width), dtype=np.float32)
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(placement.width, right), min(placement.height, bottom)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = region[y0 - top:y1 - top, x0 - left:x1 - left]
    return out


def peak(values: np.ndarray | Sequence[Sequence[float]], placement: Placement) -> tuple[int, int] | None:
    """(x, y) in original pixels of the map's maximum over the part of the box inside the picture (cell
    centres); None when the map is zero there."""
    arr = as_map(values)
    h, w = arr.shape
    left, top, right, bottom = placement.box
    xs = left + (np.arange(w) + 0.5) * (right - left) / w
    ys = top + (np.arange(h) + 0.5) * (bottom - top) / h
    inside = ((ys >= 0) & (ys < placement.height))[:, None] & ((xs >= 0) & (xs < placement.width))[None, :]
    masked = np.where(inside, arr, -np.inf)
    if not inside.any() or float(masked.max()) <= 0.0:
        return None
    i, j = np.unravel_index(int(np.argmax(masked)), arr.shape)
    x = min(placement.width - 1, max(0, int(xs[j])))
    y = min(placement.height - 1, max(0, int(ys[i])))
    return x, y
