"""Huge images decoded a strip of rows at a time, so a 12000 x 12000 PNG never exists whole in memory.

Pillow can only decode an image whole (4 bytes a pixel for RGB). libvips, with sequential access, decodes
top to bottom and keeps only a few strips; each strip goes straight into `preprocess.resize_strips`.
Used for images over `preprocess.STRIP_PIXELS` whose format and mode libvips decodes to exactly the bytes
Pillow (plus `image.to_rgb`) gives, and decodes row by row: `STREAMED` below, each checked pixel for pixel
in the tests. Anything else is decoded whole by Pillow, within the lower `whole_pixels` limit.

EXIF orientation is read from the header (as Pillow's `exif_transpose` reads it) and applied to the
resized S x S result: the antialiased resize is separable and symmetric, so resizing then rotating
equals rotating then resizing (to float rounding, tested to 1e-5).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from mffmoe.errors import CorruptMediaError

#: Pillow format -> (libvips loader, the Pillow modes whose pixels that loader reproduces exactly).
#: Not here, as their decoders hold the whole image whatever the reader does: WebP, interlaced PNG and
#: progressive JPEG (measured at 12000 x 12000: +530 to +800 MB, against about +10 MB streamed).
STREAMED: dict[str, tuple[str, frozenset[str]]] = {
    "PNG": ("pngload", frozenset({"RGB", "RGBA", "L", "LA", "P", "I;16", "I;16B", "I;16L"})),
    "JPEG": ("jpegload", frozenset({"RGB", "L"})),
    "TIFF": ("tiffload", frozenset({"RGB", "RGBA", "L", "LA"})),
}

#: Images over STRIP_PIXELS decoded whole (not in STREAMED) may have at most this many pixels, so that the
#: full roster stays within its 1.1 GB: `mffmoe analyze` peaks at 780-830 MB for a 40 MP progressive JPEG,
#: interlaced PNG or BMP, but at 1,175 MB for a 40 MP WebP (Pillow holds it three times; 930 MB at 24 MP).
WHOLE_PIXELS: dict[str, int] = {"WEBP": 24_000_000}
WHOLE_PIXELS_DEFAULT = 40_000_000


def whole_pixels(image_format: str | None) -> int:
    """The most pixels an image of this format may have when it has to be decoded whole."""
    return WHOLE_PIXELS.get(image_format or "", WHOLE_PIXELS_DEFAULT)

# EXIF orientation -> the transform of a [C, H, W] array that Pillow's exif_transpose applies.
_ORIENT = {
    2: lambda x: x[:, :, ::-1],                           # FLIP_LEFT_RIGHT
    3: lambda x: x[:, ::-1, ::-1],                        # ROTATE_180
    4: lambda x: x[:, ::-1, :],                           # FLIP_TOP_BOTTOM
    5: lambda x: x.transpose(0, 2, 1),                    # TRANSPOSE
    6: lambda x: np.rot90(x, -1, (1, 2)),                 # ROTATE_270 (90 degrees clockwise)
    7: lambda x: x.transpose(0, 2, 1)[:, ::-1, ::-1],     # TRANSVERSE
    8: lambda x: np.rot90(x, 1, (1, 2)),                  # ROTATE_90 (90 degrees counter-clockwise)
}


def orientation(header: Image.Image) -> int:
    """The EXIF orientation Pillow's `exif_transpose` would apply, read without decoding: the base
    `Image.getexif` reads the header's EXIF and XMP; PNG's override would decode the whole image to
    look for an eXIf chunk after the pixel data (such a late chunk is not applied on this path)."""
    value = Image.Image.getexif(header).get(0x0112, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(x: np.ndarray, value: int) -> np.ndarray:
    """Apply EXIF orientation `value` to a [C, H, W] array, as Pillow does to the image."""
    transform = _ORIENT.get(value)
    return np.ascontiguousarray(transform(x)) if transform else x


@dataclass(frozen=True)
class StripImage:
    """A huge image opened for reading in strips (nothing decoded yet). `size` is after orientation,
    as `load_image` would report it; `stored_size` is the pixel grid in the file."""
    path: str
    stored_size: tuple[int, int]
    orientation: int
    mode: str                      # Pillow's mode for this file (decides 16-bit scaling)
    loader: str

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.stored_size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)

    def strips(self, rows: int) -> Iterator[np.ndarray]:
        """uint8 RGB strips of `rows` rows (the last may be shorter), top to bottom, as stored."""
        import pyvips

        pyvips.cache_set_max(0)  # cached crops would keep decoded strips alive
        width, height = self.stored_size
        try:
            image = getattr(pyvips.Image, self.loader)(self.path, access="sequential", fail_on="truncated")
            if (image.width, image.height) != (width, height):
                raise CorruptMediaError(f"{self.path}: libvips reads {image.width}x{image.height}, "
                                        f"Pillow {width}x{height}")
            region = pyvips.Region.new(image)
            for top in range(0, height, rows):
                n = min(rows, height - top)
                yield _to_rgb(_strip(image, region, top, n), self.mode)
        except pyvips.Error as e:
            raise CorruptMediaError(f"{self.path}: image is truncated or undecodable "
                                    f"(libvips: {str(e).strip().splitlines()[-1]})") from e


def open_strips(path: str | os.PathLike[str], header: Image.Image) -> StripImage | None:
    """A StripImage for `header`'s file if libvips decodes its format and mode exactly, else None."""
    entry = STREAMED.get(header.format or "")
    if entry is None or header.mode not in entry[1] or getattr(header, "n_frames", 1) != 1:
        return None
    if header.info.get("interlace") or header.info.get("progressive") or header.info.get("progression"):
        return None  # decoded whole by libpng/libjpeg whoever asks
    return StripImage(str(path), header.size, orientation(header), header.mode, entry[0])


def _strip(image: Any, region: Any, top: int, rows: int) -> np.ndarray:
    dtype = {"uchar": np.uint8, "ushort": np.uint16}.get(image.format)
    if dtype is None:
        raise CorruptMediaError(f"unexpected libvips pixel format {image.format}")
    data = np.frombuffer(region.fetch(0, top, image.width, rows), dtype=dtype)
    return data.reshape(rows, image.width, image.bands)


def _to_rgb(strip: np.ndarray, mode: str) -> np.ndarray:
    """A libvips strip (1-4 bands, 8 or 16 bits) -> uint8 RGB, as `image.to_rgb` converts Pillow's."""
    if strip.dtype == np.uint16:  # Pillow keeps 16-bit grey (to_rgb scales it by 1/257) and reads
        # other 16-bit PNGs at 8 bits, keeping the high byte
        strip = (np.rint(strip / 257.0) if mode.startswith("I;16") else strip >> 8).astype(np.uint8)
    bands = strip.shape[2]
    if bands in (1, 2):  # grey (+ alpha): alpha is dropped, grey copied to R, G, B
        return np.repeat(strip[:, :, :1], 3, axis=2)
    return np.array(strip[:, :, :3])  # a writable copy (libvips' buffer is read-only)
