"""Face tracks on synthetic sequences built from real face photographs (skimage's astronaut, matplotlib's Hopper).

Boxes move along known paths; each face's appearance is computed from the real crop with a random brightness
gain and offset, pixel noise and a small crop shift per frame, so matching cannot rely on identical vectors.
"""
from __future__ import annotations

import os

import matplotlib
import numpy as np
import pytest
import skimage.data
from PIL import Image

from mffmoe.faces.tracks import TrackInput, appearance, group_persons

W, H = 100.0, 120.0  # both faces get boxes of the same size: size must not give identity away


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    """The two real face crops, uint8 RGB."""
    ast = skimage.data.astronaut()
    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    hop = np.asarray(Image.open(path).convert("RGB"))
    return {"astronaut": ast[55:185, 172:282], "hopper": hop[130:345, 152:378]}


def _jitter(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting and sensor changes between frames: gain, offset, noise, and a crop shifted by a few pixels."""
    x = crop.astype(np.float64) * rng.uniform(0.85, 1.15) + rng.uniform(-10, 10) + rng.normal(0, 4, crop.shape)
    dy, dx = (int(v) for v in rng.integers(-3, 4, 2))
    x = x[max(dy, 0) : x.shape[0] + min(dy, 0), max(dx, 0) : x.shape[1] + min(dx, 0)]
    return np.clip(x, 0, 255).astype(np.uint8)


def _face(crop: np.ndarray, frame: int, cx: float, cy: float, rng: np.random.Generator) -> TrackInput:
    jx, jy = rng.uniform(-2, 2, 2)
    box = (cx - W / 2 + jx, cy - H / 2 + jy, cx + W / 2 + jx, cy + H / 2 + jy)
    return TrackInput(frame=frame, box=box, appearance=appearance(_jitter(crop, rng)))


def _sequence(
    crops: dict[str, np.ndarray], paths: dict[str, list[tuple[float, float] | None]], seed: int
) -> tuple[list[TrackInput], list[str]]:
    """Faces along the given centre paths (None: not detected in that frame), in shuffled order within a frame."""
    rng = np.random.default_rng(seed)
    faces: list[TrackInput] = []
    who: list[str] = []
    n_frames = max(len(p) for p in paths.values())
    for frame in range(n_frames):
        here = [(name, p[frame]) for name, p in paths.items() if frame < len(p) and p[frame] is not None]
        for k in rng.permutation(len(here)):
            name, centre = here[int(k)]
            assert centre is not None
            faces.append(_face(crops[name], frame, centre[0], centre[1], rng))
            who.append(name)
    return faces, who


def _ids_of(ids: list[int], who: list[str], name: str) -> set[int]:
    return {i for i, w in zip(ids, who, strict=True) if w == name}


def _crossing(crops: dict[str, np.ndarray], seed: int) -> tuple[list[TrackInput], list[str]]:
    """Astronaut left to right, Hopper right to left, 30 px a frame; their boxes overlap in frames 4, 5 and 6.

    The centres never coincide: after the crossing each face is nearer the *other* track's last position, so a
    position-only nearest-neighbour tracker swaps them.
    """
    a: list[tuple[float, float] | None] = [(100.0 + 30 * k, 200.0) for k in range(11)]
    b: list[tuple[float, float] | None] = [(415.0 - 30 * k, 200.0) for k in range(11)]
    return _sequence(crops, {"astronaut": a, "hopper": b}, seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crossing_keeps_identity(crops: dict[str, np.ndarray], seed: int) -> None:
    faces, who = _crossing(crops, seed)
    ids = group_persons(faces)
    assert sorted(set(ids)) == [0, 1]
    ast, hop = _ids_of(ids, who, "astronaut"), _ids_of(ids, who, "hopper")
    assert len(ast) == 1 and len(hop) == 1 and ast != hop


@pytest.mark.parametrize("seed", [0, 1])
def test_meet_and_turn_back_needs_appearance(crops: dict[str, np.ndarray], seed: int) -> None:
    """They meet, overlap and go back the way they came: constant velocity predicts the wrong continuation."""
    a: list[tuple[float, float] | None] = [(100.0 + 30 * k, 200.0) for k in range(6)]
    b: list[tuple[float, float] | None] = [(415.0 - 30 * k, 200.0) for k in range(6)]
    a += [(250.0 - 30 * k, 200.0) for k in range(1, 6)]
    b += [(265.0 + 30 * k, 200.0) for k in range(1, 6)]
    faces, who = _sequence(crops, {"astronaut": a, "hopper": b}, seed)
    ids = group_persons(faces)
    ast, hop = _ids_of(ids, who, "astronaut"), _ids_of(ids, who, "hopper")
    assert len(ast) == 1 and len(hop) == 1 and ast != hop
    # Position and velocity alone get this wrong: the appearance term is what keeps the identities.
    blind = group_persons(faces, w_app=0.0)
    assert not (len(_ids_of(blind, who, "astronaut")) == 1 and len(_ids_of(blind, who, "hopper")) == 1)


@pytest.mark.parametrize(("missing", "persons"), [(3, 1), (5, 1), (6, 2), (8, 2)])
def test_absence_within_max_gap_is_same_person(crops: dict[str, np.ndarray], missing: int, persons: int) -> None:
    """A moving face undetected for `missing` sampled frames: the same person up to max_gap=5, a new one beyond."""
    path: list[tuple[float, float] | None] = [(100.0 + 15 * k, 150.0 + 5 * k) for k in range(20)]
    for k in range(6, 6 + missing):
        path[k] = None
    faces, who = _sequence(crops, {"hopper": path}, seed=missing)
    ids = group_persons(faces, max_gap=5)
    assert len(set(ids)) == persons
    assert ids[:6] == [0] * 6 and ids[6:] == [persons - 1] * (len(ids) - 6)


def test_faces_in_one_frame_never_share_a_person(crops: dict[str, np.ndarray]) -> None:
    """Nine look-alike faces (more than the exact solver takes) plus two heavily overlapping ones."""
    rng = np.random.default_rng(3)
    faces: list[TrackInput] = []
    for frame in range(4):
        for gx in range(3):
            for gy in range(3):
                faces.append(_face(crops["astronaut"], frame, 100.0 + 150 * gx, 100.0 + 160 * gy, rng))
    ids = group_persons(faces)
    for frame in range(4):
        frame_ids = [i for i, f in zip(ids, faces, strict=True) if f.frame == frame]
        assert len(set(frame_ids)) == len(frame_ids) == 9
    assert ids[9:18] == ids[:9] == list(range(9))  # and each keeps its id from frame to frame

    same = appearance(crops["hopper"])
    pair = [TrackInput(0, (10.0, 10.0, 110.0, 130.0), same), TrackInput(0, (14.0, 12.0, 114.0, 132.0), same)]
    assert group_persons(pair) == [0, 1]


def test_single_static_face_is_one_person(crops: dict[str, np.ndarray]) -> None:
    faces, _ = _sequence(crops, {"astronaut": [(256.0, 200.0)] * 20}, seed=4)
    assert group_persons(faces) == [0] * 20


def test_deterministic(crops: dict[str, np.ndarray]) -> None:
    faces, _ = _crossing(crops, seed=5)
    assert group_persons(faces) == group_persons(list(faces))
    again, _ = _crossing(crops, seed=5)
    assert group_persons(again) == group_persons(faces)
    assert np.array_equal(appearance(crops["hopper"]), appearance(crops["hopper"].copy()))


def test_appearance_tolerates_lighting(crops: dict[str, np.ndarray]) -> None:
    """A darker copy of a face stays closer to it than the other person's face does."""
    ast, hop = appearance(crops["astronaut"]), appearance(crops["hopper"])
    dark = appearance((crops["astronaut"].astype(np.float64) * 0.7).astype(np.uint8))
    assert ast.ndim == 1 and np.isclose(np.linalg.norm(ast), 1.0)
    assert float(dark @ ast) > 0.95 > float(hop @ ast)
