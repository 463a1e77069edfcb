"""Image decoding: any Pillow mode to 8-bit RGB, with a pixel limit against decompression bombs."""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mffmoe.errors import CorruptMediaError, DecompressionBombError, UnsupportedMediaError
from mffmoe.media.strips import STREAMED, StripImage, open_strips, whole_pixels

#: Default pixel limit (width x height): Pillow's hard cap (2 x MAX_IMAGE_PIXELS, ~179 MP). Lower it
#: with `max_pixels`; Pillow's warning between 1x and 2x is silenced because this limit replaces it.
DEFAULT_MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB. High-bit-depth greyscale is scaled to 8 bits (Pillow's plain
    `convert("RGB")` clips it, turning most 16-bit images white); alpha is dropped as the host did."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        elif mode == "I":
            top = 65535.0 if arr.max(initial=0) > 255 else 255.0
            arr = arr * (255.0 / top)
        else:  # float images: assume [0, 1] when they fit, else min-max
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
            arr = arr * 255.0 if lo >= 0.0 and hi <= 1.0 else (arr - lo) * (255.0 / max(hi - lo, 1e-12))
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


#: The IJG (libjpeg) standard quantisation tables, natural (row-major) order, as Pillow's
#: `Image.quantization` gives them: luminance (table 0) and chrominance (table 1), Annex K of ITU T.81.
_IJG_TABLES = (
    np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
              14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
              49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.int64),
    np.array([17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
              47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.int64),
)


def _ijg_table(table: int, quality: int) -> np.ndarray:
    """libjpeg's table for `quality` (jpeg_quality_scaling, then jpeg_add_quant_table, baseline)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_IJG_TABLES[table] * scale + 50) // 100, 1, 255)


def jpeg_quality(tables: dict[int, Any] | None) -> int | None:
    """The JPEG quality (1-100) whose IJG-scaled standard tables come nearest `tables` (Pillow's
    `Image.quantization`: the luminance table and, when there, the chrominance one), by the sum of
    absolute differences; ties go to the higher quality. Exact for libjpeg-made files (Pillow, most
    software, many cameras); for an encoder with its own tables, the IJG quality of similar strength.
    None without a usable table."""
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    have = [(t, np.asarray(list(tables[t]), dtype=np.int64)) for t in (0, 1) if t in tables and len(tables[t]) == 64]
    errors = [sum(int(np.abs(_ijg_table(t, q) - v).sum()) for t, v in have) for q in range(1, 101)]
    best = min(errors)
    return max(q for q in range(1, 101) if errors[q - 1] == best)


def image_jpeg_quality(image: Any) -> int | None:
    """`jpeg_quality` of an opened image (a JPEG, or an MPO made of JPEGs; else None): the tables are
    read with the header, so nothing is decoded."""
    return jpeg_quality(getattr(image, "quantization", None)) if image.format in ("JPEG", "MPO") else None


def load_image(path: str | os.PathLike[str], max_pixels: int | None = None,
               exif_transpose: bool = True) -> Image.Image:
    """Open, check the pixel count before decoding, decode fully (to catch truncation), return RGB."""
    with _typed_errors(path):
        image = _open_checked(path, max_pixels)
        return _decode(image, exif_transpose)


def open_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> Image.Image | StripImage:
    """What preprocessing needs, within the memory budget: an image over `STRIP_PIXELS` in a format
    libvips reads exactly, row by row, is opened for reading in strips (`StripImage`, nothing decoded
    yet); other large ones are decoded whole only up to `strips.whole_pixels`; smaller ones as
    `load_image` decodes them."""
    with _typed_errors(path):
        image = _open_checked(path, max_pixels)
        streamed = _streamed_or_small(path, image)
        if streamed is None:
            return _decode(image, True)
        image.close()
        return streamed


def check_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> None:
    """Raise the typed error `open_image` would raise for the header alone (pixel limits, unreadable
    header), without decoding: the checks made before a model loads."""
    with _typed_errors(path), _open_checked(path, max_pixels) as image:
        _streamed_or_small(path, image)


def _streamed_or_small(path: str | os.PathLike[str], image: Image.Image) -> StripImage | None:
    """A StripImage for a large image libvips streams; None for one Pillow may decode whole; a
    DecompressionBombError for a large one that must be decoded whole and does not fit the budget."""
    from mffmoe.media.preprocess import STRIP_PIXELS

    w, h = image.size
    if w * h <= STRIP_PIXELS:
        return None
    streamed = open_strips(path, image)
    if streamed is None and w * h > whole_pixels(image.format):
        raise DecompressionBombError(
            f"{path}: this {w}x{h} {image.format} image (mode {image.mode}) must be decoded whole, and "
            f"its {w * h:,} pixels exceed the {whole_pixels(image.format):,} that fit the memory budget; "
            f"larger images are read in strips as {_streamed_list()}, not interlaced or progressive "
            f"(convert it to such a PNG)")
    return streamed


def _open_checked(path: str | os.PathLike[str], max_pixels: int | None) -> Image.Image:
    limit = max_pixels or DEFAULT_MAX_PIXELS
    image: Image.Image = Image.open(path)  # reads the header only
    w, h = image.size
    if w * h > limit:
        image.close()
        raise DecompressionBombError(f"{path}: {w}x{h} = {w * h:,} pixels exceeds the limit of "
                                     f"{limit:,} (possible decompression bomb)")
    if w == 0 or h == 0:
        image.close()
        raise CorruptMediaError(f"{path}: image has zero size")
    return image


def _decode(image: Image.Image, exif_transpose: bool) -> Image.Image:
    image.load()
    if exif_transpose:  # in place: a copy would double a huge image's memory
        ImageOps.exif_transpose(image, in_place=True)
    return to_rgb(image)


def _streamed_list() -> str:
    return ", ".join(f"{fmt} ({'/'.join(sorted(modes))})" for fmt, (_, modes) in STREAMED.items())


@contextmanager
def _typed_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Pillow's decoders raise many types (OSError, SyntaxError, struct.error, ...): give each its kind."""
    try:
        yield
    except (DecompressionBombError, CorruptMediaError):
        raise
    except Image.DecompressionBombError as e:  # Pillow's own hard cap (2x MAX_IMAGE_PIXELS)
        raise DecompressionBombError(f"{path}: {e}") from e
    except UnidentifiedImageError as e:
        raise UnsupportedMediaError(f"{path}: not an image Pillow can read") from e
    except Exception as e:
        raise CorruptMediaError(f"{path}: image is truncated or undecodable ({type(e).__name__}: {e})") from e
