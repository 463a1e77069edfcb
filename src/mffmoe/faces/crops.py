"""Face-centred crops, the input MFF-MoE was trained on, and which faces of a frame are kept.

A crop is a square centred on the face box, of side `margin` x the box's larger side. The default margin,
1.3, is the DFDC 2020 winner's (MTCNN boxes grown by 30%): it keeps the whole face with its outline and
a little hair and background, where blending artefacts sit. Where the square leaves the frame it is padded
with black, so the face stays centred (clipping would shift it). With `align`, the frame is first rotated
about the face centre so that the eyes are level (BlazeFace's eye keypoints), the crop cut from the
rotated frame. The crop then goes through the spec's preprocessing like any image.

Faces kept (`select_faces`): at least `min_size` pixels (the box's larger side; `FaceFinder` asks for
`BOX_SLACK x --min-face`, because BlazeFace's box runs from the brows to the chin, about 3/4 of a face's
height with the forehead) and at least half the size of the largest face in the frame (SBI's rule:
background faces are not what the image is about), largest first, at most `max_faces`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mffmoe.faces.base import Face

DEFAULT_MARGIN = 1.3
DEFAULT_MAX_FACES = 8
RELATIVE_SIZE = 0.5


@dataclass(frozen=True)
class FaceCrop:
    """A kept face and its crop: `crop_box` in frame pixels (may extend past the frame), `pixels` the
    uint8 RGB crop, `angle` the rotation applied (degrees, anticlockwise; 0 without alignment)."""
    face: Face
    crop_box: tuple[int, int, int, int]
    pixels: np.ndarray
    angle: float = 0.0


#: A face of --min-face pixels (forehead to chin) gets a detector box about this much smaller.
BOX_SLACK = 0.7


def select_faces(faces: list[Face], min_size: float = 0.0, max_faces: int = DEFAULT_MAX_FACES,
                 relative: float = RELATIVE_SIZE) -> list[Face]:
    """The faces analysed: big enough, at least `relative` x the largest, largest first, at most
    `max_faces`."""
    if not faces:
        return []
    largest = max(f.size for f in faces)
    kept = [f for f in faces if f.size >= min_size and f.size >= relative * largest]
    return sorted(kept, key=lambda f: (-f.size, f.box))[:max(1, max_faces)]


def crop_box(face: Face, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int, int]:
    """The square (left, top, right, bottom), integer pixels, centred on the face box, side = margin x
    the box's larger side (at least 1)."""
    side = max(1, int(round(margin * face.size)))
    cx, cy = face.centre
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    return left, top, left + side, top + side


def eye_angle(face: Face) -> float:
    """Degrees to rotate the frame (anticlockwise, PIL's sense) to level the eyes; 0 without keypoints.
    BlazeFace gives the person's right eye first (on the image's left for a frontal face)."""
    if len(face.keypoints) < 2:
        return 0.0
    (rx, ry), (lx, ly) = face.keypoints[0], face.keypoints[1]
    return math.degrees(math.atan2(ly - ry, lx - rx))


def crop_face(rgb: np.ndarray, face: Face, margin: float = DEFAULT_MARGIN, align: bool = False) -> FaceCrop:
    """Cut `face`'s square crop from the uint8 HxWx3 frame, black where it leaves the frame."""
    box = crop_box(face, margin)
    angle = eye_angle(face) if align else 0.0
    if angle == 0.0:
        return FaceCrop(face, box, cut_padded(rgb, box), 0.0)
    # rotate a region big enough for the rotated square about the face centre, then cut the centre
    left, top, right, bottom = box
    side = right - left
    reach = int(math.ceil(side * math.sqrt(2) / 2)) + 2
    cx, cy = (left + right) / 2, (top + bottom) / 2
    region_box = (int(round(cx)) - reach, int(round(cy)) - reach, int(round(cx)) + reach, int(round(cy)) + reach)
    region = Image.fromarray(cut_padded(rgb, region_box))
    rotated = region.rotate(angle, resample=Image.Resampling.BICUBIC, center=(cx - region_box[0], cy - region_box[1]))
    off_x, off_y = left - region_box[0], top - region_box[1]
    pixels = np.asarray(rotated)[off_y:off_y + side, off_x:off_x + side]
    return FaceCrop(face, box, np.ascontiguousarray(pixels), angle)


def cut_padded(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The (left, top, right, bottom) region of a uint8 HxWx3 image, black where it leaves the image."""
    left, top, right, bottom = box
    h, w = rgb.shape[:2]
    out = np.zeros((bottom - top, right - left, 3), dtype=np.uint8)
    x0, y0, x1, y1 = max(0, left), max(0, top), min(w, right), min(h, bottom)
    if x1 > x0 and y1 > y0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = rgb[y0:y1, x0:x1]
    return out
