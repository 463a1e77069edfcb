"""The planted-pattern task on faces: "fake" scenes carry a faint pattern inside the face box only.

A task where face-centred analysis should win, for the tests and docs of `--crop faces`: every item is a
generated scene (`mffmoe.testing.faces.face_scene`: a textured background, no other face, with one real
photographed face, 64-112 px high in a 384 x 384 frame); a fake's face box, and nothing else, adds the
planted diagonal grating (`planted.planted`, 20 grey levels) at a period scaled to the face: 8 px in its
face crop (1.3 x the face) resized to a 64-px input, the period the planted frame task uses. Resizing the
whole frame to 64 px instead (a factor of 6) leaves the face 11-19 px wide and the grating at a period
of 1.7-3 px, mostly averaged away by the resize's antialiasing. So a model trained and evaluated on face
crops learns it; one on whole frames hardly can.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from mffmoe.faces.crops import DEFAULT_MARGIN
from mffmoe.testing.faces import Scene, face_scene, face_sources
from mffmoe.testing.planted import planted

SCENE = 384
FACE_SIZES = (64, 112)


def planted_face_scene(seed: int, fake: bool, size: int = SCENE, face_sizes: tuple[int, int] = FACE_SIZES,
                       amplitude: float = 20.0, period: float = 8.0, input_size: int = 64) -> Scene:
    """One scene of the task (a `size` x `size` background, one face); fakes add the grating inside the
    face's true box, scaled to the face: `period` px in its face crop (1.3 x the face height) resized to
    `input_size`."""
    # the two colour portraits (astronaut, Grace Hopper): LFW's 25-px grey faces upscaled 2-4x are the
    # detector's misses, and a face not found is scored whole, which this task is not about
    scene = face_scene(seed, size, size, n_faces=1, sizes=face_sizes, max_rotation=10.0, sources=face_sources()[:2])
    if not fake or not scene.faces:
        return scene
    img = np.asarray(scene.image, dtype=np.float32).copy()
    left, top, right, bottom = (int(round(v)) for v in scene.faces[0])
    in_frame = period * DEFAULT_MARGIN * (bottom - top) / input_size
    img[top:bottom, left:right] += planted(size, size, in_frame, amplitude)[top:bottom, left:right]
    image = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    return Scene(image, scene.faces, scene.sources)


def make_planted_face_dataset(out: str | os.PathLike[str], n_real: int = 40, n_fake: int = 40,
                              size: int = SCENE, face_sizes: tuple[int, int] = FACE_SIZES,
                              amplitude: float = 20.0, seed: int = 0, input_size: int = 64) -> Path:
    """Write `out/real/*.png` and `out/fake/*.png` of the task; each scene from its own seed (offset by
    `seed`, so two sets with seeds far apart share no scene)."""
    out = Path(out)
    base = 1_000 * seed
    for name, fake, n, offset in (("real", False, n_real, 0), ("fake", True, n_fake, 500)):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            scene = planted_face_scene(base + offset + i, fake, size, face_sizes, amplitude, input_size=input_size)
            scene.image.save(folder / f"{name}_{i:04d}.png")
    return out
