"""The spec's transform, ToTensor -> Normalize -> Resize((S, S), antialias=True), done cheaper and
without torch.

Antialiased bilinear resizing is linear with weights that sum to one, and normalisation is a per-channel
affine map, so the two commute: we resize the [0, 1] image first (fewer pixels to normalise) and
normalise the small result. The resize is Pillow's on float32 ("F") planes: torchvision's antialiased
kernel is a port of Pillow's, and Pillow accumulates in double precision, so it is closer to the exact
(float64) result than torch's float32 kernel (measured: 6e-8 against torch's up to 1.2e-5). Agreement
with torchvision's order is tested to 1e-5 per element. Pixels come out as numpy float32 arrays, so the
data path up to the engine needs no torch (the exported engines run without it).

The resize is separable (Pillow makes a horizontal pass, then a vertical one), so a huge image is resized
in row strips: each strip goes to float and is resized horizontally into an H x S buffer, then one
vertical pass makes S x S. The float copy of the whole image (12 bytes a pixel) is never made, and an
image read in strips (`media.strips.StripImage`) is never decoded whole either.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mffmoe.config import IMAGENET_MEAN, IMAGENET_STD
from mffmoe.media.strips import StripImage, orient

if TYPE_CHECKING:
    import torch

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)


def image_to_array(image: Image.Image) -> np.ndarray:
    """RGB PIL image -> uint8 HWC array. Other modes are refused, not converted: decoding
    (`media.image.to_rgb`) has made the one conversion already, with high bit depths scaled."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode!r} (convert it with media.image.to_rgb)")
    return np.array(image)


#: Images with more pixels than this may be read in strips (`media.strips`), and are never searched for faces.
STRIP_PIXELS = 4096 * 4096
#: Images with more pixels than this are resized in strips of STRIP_ROWS rows (smaller ones the direct way):
#: the direct way holds the whole image in float (a 1080p video frame: 25 MB, +40 MB at the peak; a 720p
#: photograph +22 MB, against +8 MB in strips), strips hold 3 MB, and are as fast (measured). The pixels
#: were identical on the 720p, 1080p, 4K and 1024x768 frames measured, within one float32 ulp (6e-8) on
#: some others (a portrait 720x1280 frame); tests allow 1e-6.
RESIZE_STRIP_PIXELS = 1 << 18
STRIP_ROWS = 32  # libvips keeps a few strips: at 12000 px wide, 256 rows cost about 60 MB more


def preprocess(image: Image.Image | np.ndarray | StripImage, size: int) -> np.ndarray:
    """RGB image (PIL, uint8 HWC array, or a huge image read in strips) -> normalised float32 [3, size, size]."""
    if isinstance(image, StripImage):
        return normalize(orient(resize_strips(image.strips(STRIP_ROWS), *image.stored_size, size),
                                image.orientation))
    if isinstance(image, Image.Image) and image.mode != "RGB":
        image_to_array(image)  # refuses it
    width, height = image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])
    if width * height > RESIZE_STRIP_PIXELS:
        return normalize(resize_in_strips(image, size))
    arr = image_to_array(image) if isinstance(image, Image.Image) else image
    return normalize(_resize(_to_float(arr), size, size))


def normalize(x: np.ndarray) -> np.ndarray:
    """[3, H, W] in [0, 1] -> ImageNet-normalised, in place."""
    x -= _MEAN
    x /= _STD
    return x


def _to_float(arr: np.ndarray) -> np.ndarray:
    """uint8 HWC -> float32 [3, H, W] in [0, 1]."""
    x = np.empty((3, arr.shape[0], arr.shape[1]), dtype=np.float32)
    for c in range(3):
        np.divide(arr[:, :, c], 255.0, out=x[c], dtype=np.float32)
    return x


def _resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """[C, H, W] float32 -> [C, height, width], Pillow's antialiased bilinear filter per plane. A
    dimension that keeps its size is left exactly as it was (Pillow skips that pass)."""
    if x.shape[1:] == (height, width):
        return x
    out = np.empty((x.shape[0], height, width), dtype=np.float32)
    for c in range(x.shape[0]):
        plane = Image.fromarray(np.ascontiguousarray(x[c]), mode="F")
        out[c] = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
    return out


def resize_in_strips(image: Image.Image | np.ndarray, size: int, rows: int = STRIP_ROWS) -> np.ndarray:
    """The antialiased bilinear resize of a decoded image to [3, size, size] (in [0, 1], not normalised),
    one strip of `rows` rows at a time (see `resize_strips`)."""
    width, height = image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])
    strips = ((np.array(image.crop((0, top, width, min(height, top + rows)))) if isinstance(image, Image.Image)
               else image[top:top + rows]) for top in range(0, height, rows))
    return resize_strips(strips, width, height, size)


def resize_strips(strips: Iterable[np.ndarray], width: int, height: int, size: int) -> np.ndarray:
    """The antialiased bilinear resize to [3, size, size] (in [0, 1], not normalised) of a `width` x
    `height` image given as uint8 HWC row strips, top to bottom: each strip is converted to float and
    resized horizontally into an H x size buffer, then that is resized vertically. A resize that keeps
    a dimension leaves it exactly as it was."""
    wide = np.empty((3, height, size), dtype=np.float32)
    top = 0
    for strip in strips:
        bottom = top + strip.shape[0]
        if strip.shape[1] != width or bottom > height:
            raise ValueError(f"strip of shape {strip.shape} does not fit a {width}x{height} image at row {top}")
        wide[:, top:bottom] = _resize(_to_float(strip), bottom - top, size)
        del strip
        top = bottom
    if top != height:
        raise ValueError(f"strips cover {top} of {height} rows")
    return _resize(wide, size, size)


def spec_transform(size: int) -> Callable[[Image.Image], torch.Tensor]:
    """The spec's torchvision pipeline verbatim (the reference our `preprocess` is checked against)."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        transforms.Resize((size, size), antialias=True),
    ])
