"""Image decoding: any Pillow mode to 8-bit RGB, with a pixel limit against decompression bombs."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mffmoe.errors import CorruptMediaError, DecompressionBombError, UnsupportedMediaError

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


def load_image(path: str | os.PathLike[str], max_pixels: int | None = None,
               exif_transpose: bool = True) -> Image.Image:
    """Open, check the pixel count before decoding, decode fully (to catch truncation), return RGB."""
    limit = max_pixels or DEFAULT_MAX_PIXELS
    path = Path(path)
    try:
        image: Image.Image = Image.open(path)  # reads the header only
        w, h = image.size
        if w * h > limit:
            raise DecompressionBombError(f"{path}: {w}x{h} = {w * h:,} pixels exceeds the limit of "
                                         f"{limit:,} (possible decompression bomb)")
        if w == 0 or h == 0:
            raise CorruptMediaError(f"{path}: image has zero size")
        image.load()
        if exif_transpose:  # in place: a copy would double a huge image's memory
            ImageOps.exif_transpose(image, in_place=True)
        return to_rgb(image)
    except (DecompressionBombError, CorruptMediaError):
        raise
    except Image.DecompressionBombError as e:  # Pillow's own hard cap (2x MAX_IMAGE_PIXELS)
        raise DecompressionBombError(f"{path}: {e}") from e
    except UnidentifiedImageError as e:
        raise UnsupportedMediaError(f"{path}: not an image Pillow can read") from e
    except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, struct.error, ...)
        raise CorruptMediaError(f"{path}: image is truncated or undecodable ({type(e).__name__}: {e})") from e
