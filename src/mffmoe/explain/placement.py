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


@dataclass(frozen=True)
class CellGrid:
    """Where a coarse map's cells sit in the model input: cell j's centre at input pixel step * j + offset
    (pixel centres at integer coordinates; the same along both axes)."""
    step: float
    offset: float

    @classmethod
    def even(cls, cells: int, size: int) -> CellGrid:
        """`cells` equal cells over `size` pixels, each centred on its square."""
        step = size / cells
        return cls(step, step / 2 - 0.5)


def _linear(values: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of `values` along `axis` at fractional indices `coords` (clamped at the ends)."""
    n = values.shape[axis]
    if n == 1:
        return np.repeat(values, len(coords), axis=axis)
    c = np.clip(coords, 0, n - 1)
    i0 = np.minimum(np.floor(c).astype(int), n - 2)
    t = (c - i0).astype(np.float32)
    shape = [1, 1]
    shape[axis] = len(coords)
    t = t.reshape(shape)
    return np.take(values, i0, axis=axis) * (1 - t) + np.take(values, i0 + 1, axis=axis) * t


def upsample(values: np.ndarray, size: int, grid: CellGrid | None = None) -> np.ndarray:
    """A method's coarse map to the model's size x size input, bilinear between the cells' true centres
    (`grid`; default: equal cells centred on their squares), constant beyond the outer centres."""
    arr = as_map(values)
    if arr.shape == (size, size) and grid is None:
        return arr.copy()
    h, w = arr.shape
    gy = grid or CellGrid.even(h, size)
    gx = grid or CellGrid.even(w, size)
    pixels = np.arange(size, dtype=np.float64)
    rows = _linear(arr, (pixels - gy.offset) / gy.step, axis=0)
    return np.clip(_linear(rows, (pixels - gx.offset) / gx.step, axis=1), 0, None).astype(np.float32)


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
