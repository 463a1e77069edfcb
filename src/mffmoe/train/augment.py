"""Training augmentations the deepfake field uses (DeepfakeBench / DFDC winners): horizontal flip,
JPEG re-compression, Gaussian blur, resize jitter. A registry of PIL-image functions.

They act on the decoded RGB image BEFORE the detector's own `preprocess`, so training sees exactly the
tensor path `mffmoe analyze` uses. Each call takes a numpy Generator: a sample's augmentation depends
only on (seed, epoch, index), which makes runs repeatable and resumable whatever the worker count.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from mffmoe.errors import ConfigError

AugmentFn = Callable[[Image.Image, np.random.Generator], Image.Image]


def hflip(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.mirror(image)


def jpeg(image: Image.Image, rng: np.random.Generator, quality: tuple[int, int] = (60, 100)) -> Image.Image:
    """Re-encode as JPEG: social-media re-compression is the commonest real-world corruption."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def blur(image: Image.Image, rng: np.random.Generator, sigma: tuple[float, float] = (0.1, 1.5)) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(*sigma))))


def resize_jitter(image: Image.Image, rng: np.random.Generator, scale: tuple[float, float] = (0.5, 1.0),
                  ) -> Image.Image:
    """Down-scale by a random factor and back: the loss of detail of re-uploads at lower resolution."""
    f = float(rng.uniform(*scale))
    w, h = image.size
    small = image.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BILINEAR)


#: name -> (function, probability of applying it to a sample)
AUGMENTATIONS: dict[str, tuple[AugmentFn, float]] = {
    "hflip": (hflip, 0.5),
    "jpeg": (jpeg, 0.5),
    "blur": (blur, 0.3),
    "resize": (resize_jitter, 0.3),
}
DEFAULT_AUGMENTATIONS: tuple[str, ...] = ("hflip", "jpeg", "blur", "resize")


def parse_augmentations(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """"hflip,jpeg" / ["hflip", "jpeg"] / "none" / "" -> validated names, in registry order."""
    if spec is None:
        return DEFAULT_AUGMENTATIONS
    names = [n.strip() for part in ([spec] if isinstance(spec, str) else spec) for n in part.split(",")]
    names = [n for n in names if n and n != "none"]
    unknown = sorted(set(names) - AUGMENTATIONS.keys())
    if unknown:
        raise ConfigError(f"unknown augmentation(s) {unknown}; choose from {sorted(AUGMENTATIONS)} or 'none'")
    return tuple(n for n in AUGMENTATIONS if n in names)


@dataclass(frozen=True)
class Augment:
    """Apply each named augmentation with its probability, in registry order (flip, JPEG, blur, resize)."""

    names: tuple[str, ...] = DEFAULT_AUGMENTATIONS

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        for name in self.names:
            fn, p = AUGMENTATIONS[name]
            if rng.random() < p:
                image = fn(image, rng)
        return image
