"""Scenes with real faces at known places, for face detection tests and the detector comparison.

The faces are real photographs that ship inside packages: scikit-image's astronaut (Eileen Collins) and
its 100 LFW faces (`data.lfw_subset`, 25 x 25 grey), and matplotlib's Grace Hopper. Each is pasted, scaled,
rotated and flipped, onto a generated background (smooth colour noise with shapes, no faces); the truth
is each pasted face's box. `face_free_scene` gives scenes without faces: the same backgrounds plus LFW's
100 non-face patches.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True)
class FaceSource:
    """A photograph and, inside it, the head region pasted (with context) and the face box within it."""
    name: str
    image: Image.Image
    head: tuple[int, int, int, int]  # region cut from `image` (left, top, right, bottom)
    face: tuple[int, int, int, int]  # the face (brow to chin, ear to ear) in `image` coordinates


@functools.cache
def face_sources() -> tuple[FaceSource, ...]:
    """The real faces: astronaut, Grace Hopper, then 100 LFW faces."""
    import matplotlib
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    hopper = Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB")
    out = [FaceSource("astronaut", astronaut, (130, 10, 325, 215), (172, 55, 282, 185)),
           FaceSource("hopper", hopper, (110, 40, 420, 390), (152, 130, 378, 345))]
    lfw = data.lfw_subset()
    for i in range(100):  # tight crops: the whole patch is (nearly) the face
        grey = Image.fromarray((lfw[i] * 255).round().astype(np.uint8)).convert("RGB")
        out.append(FaceSource(f"lfw{i}", grey, (0, 0, 25, 25), (2, 2, 23, 24)))
    return tuple(out)


def background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Smooth colour noise with random rectangles and ellipses: texture and edges, no faces."""
    small = rng.integers(0, 256, (max(2, height // 40), max(2, width // 40), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, width // 3)), y0 + int(rng.integers(10, height // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x0, y0, x1, y1), fill=colour)
    noise = rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    faces: list[tuple[float, float, float, float]]  # true face boxes (left, top, right, bottom)
    sources: list[str]


def face_scene(seed: int, width: int = 1280, height: int = 720, n_faces: int | None = None,
               sizes: tuple[int, int] = (32, 400), max_rotation: float = 20.0,
               sources: tuple[FaceSource, ...] | None = None) -> Scene:
    """A background with 1-4 real faces (face box heights drawn log-uniformly in `sizes`), rotated up to
    `max_rotation` degrees, flipped half the time, never overlapping."""
    rng = np.random.default_rng(seed)
    pool = sources or face_sources()
    image = background(width, height, rng)
    n = n_faces or int(rng.integers(1, 5))
    taken: list[tuple[float, float, float, float]] = []
    names: list[str] = []
    for _ in range(n):
        face_h = float(np.exp(rng.uniform(np.log(sizes[0]), np.log(sizes[1]))))
        src = pool[int(rng.integers(0, len(pool)))] if sources else _pick(pool, rng, face_h)
        placed = _paste(image, src, face_h, rng, taken, max_rotation)
        if placed is not None:
            taken.append(placed)
            names.append(src.name)
    return Scene(image, taken, names)


def _pick(pool: tuple[FaceSource, ...], rng: np.random.Generator, face_h: float) -> FaceSource:
    """An LFW face for faces up to 100 px (4x its 25 px: more would be a blur no camera makes), else one of
    the two portraits."""
    if face_h <= 100 and rng.random() < 0.5:
        return pool[int(rng.integers(2, len(pool)))]
    return pool[int(rng.integers(0, 2))]


def _paste(image: Image.Image, src: FaceSource, face_h: float, rng: np.random.Generator,
           taken: list[tuple[float, float, float, float]], max_rotation: float,
           ) -> tuple[float, float, float, float] | None:
    hl, ht, hr, hb = src.head
    fl, ft, fr, fb = src.face
    scale = face_h / (fb - ft)
    head = src.image.crop(src.head)
    if rng.random() < 0.5:
        head = head.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        fl, fr = hl + hr - fr, hl + hr - fl
    w, h = max(1, round((hr - hl) * scale)), max(1, round((hb - ht) * scale))
    head = head.resize((w, h), Image.Resampling.BICUBIC)
    angle = float(rng.uniform(-max_rotation, max_rotation))
    mask = Image.new("L", (w, h), 255).filter(ImageFilter.GaussianBlur(max(1, min(w, h) // 30)))
    head_r = head.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    mask_r = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    # the face centre, relative to the head patch centre, rotated the same way (PIL rotates anticlockwise)
    cx, cy = ((fl + fr) / 2 - (hl + hr) / 2) * scale, ((ft + fb) / 2 - (ht + hb) / 2) * scale
    a = np.deg2rad(angle)
    rx, ry = cx * np.cos(a) + cy * np.sin(a), -cx * np.sin(a) + cy * np.cos(a)
    fw, fh = (fr - fl) * scale, (fb - ft) * scale
    W, H = image.size
    for _ in range(50):
        x = int(rng.integers(0, max(1, W - head_r.width)))
        y = int(rng.integers(0, max(1, H - head_r.height)))
        fx, fy = x + head_r.width / 2 + rx, y + head_r.height / 2 + ry
        box = (fx - fw / 2, fy - fh / 2, fx + fw / 2, fy + fh / 2)
        if box[0] < 0 or box[1] < 0 or box[2] > W or box[3] > H:
            continue
        region = (x, y, x + head_r.width, y + head_r.height)
        if any(_overlaps(region, _grow(t, 1.6)) for t in taken):
            continue
        image.paste(head_r, (x, y), mask_r)
        return box
    return None


def _grow(box: tuple[float, float, float, float], k: float) -> tuple[float, float, float, float]:
    cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
    return (cx - k * w / 2, cy - k * h / 2, cx + k * w / 2, cy + k * h / 2)


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def crossing_video(path: str | os.PathLike[str], frames: int = 8, width: int = 480, height: int = 270,
                   fps: int = 8) -> str:
    """A video of two real faces (the astronaut, Grace Hopper) crossing a generated background, one left
    to right and higher, the other right to left and lower: two persons."""
    from mffmoe.testing.media import encode_video

    astronaut, hopper = face_sources()[:2]
    bg = background(width, height, np.random.default_rng(0))
    heads = [s.image.crop(s.head).resize((100, 110)) for s in (astronaut, hopper)]
    pictures = []
    for t in range(frames):
        frame = bg.copy()
        frame.paste(heads[0], (20 + 40 * t, 20))
        frame.paste(heads[1], (width - 120 - 40 * t, 140))
        pictures.append(np.asarray(frame))
    return str(encode_video(path, pictures, fps=fps))


def face_free_scene(seed: int, width: int = 1280, height: int = 720) -> Image.Image:
    """A background with up to six of LFW's non-face patches pasted at 40-200 px."""
    from skimage import data

    rng = np.random.default_rng(10_000 + seed)
    image = background(width, height, rng)
    patches = data.lfw_subset()[100:]
    for _ in range(int(rng.integers(0, 7))):
        side = int(rng.integers(40, 200))
        patch = Image.fromarray((patches[int(rng.integers(0, 100))] * 255).astype(np.uint8)).convert("RGB")
        image.paste(patch.resize((side, side), Image.Resampling.BICUBIC),
                    (int(rng.integers(0, width - side)), int(rng.integers(0, height - side))))
    return image


def matches(found: list[tuple[float, float, float, float]], truth: list[tuple[float, float, float, float]],
            ) -> tuple[int, int]:
    """(true faces found, detections matching no true face). A detection matches a true face when its
    centre lies inside the true box and its height is 0.4-2.5 times the true height."""
    hit = [False] * len(truth)
    false = 0
    for d in found:
        cx, cy, dh = (d[0] + d[2]) / 2, (d[1] + d[3]) / 2, d[3] - d[1]
        j = next((j for j, t in enumerate(truth) if t[0] <= cx <= t[2] and t[1] <= cy <= t[3]
                  and 0.4 <= dh / (t[3] - t[1]) <= 2.5), None)
        if j is None:
            false += 1
        else:
            hit[j] = True
    return sum(hit), false
