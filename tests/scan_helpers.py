"""Helpers of the scan tests: the generated collection, a crashing decoder, row comparison."""
from __future__ import annotations

import os
from pathlib import Path

from mffmoe.testing.collections import make_collection  # noqa: F401  (re-exported for the scan tests)


def crashing_decode(path, cfg):
    """A decode function that kills its process on files named crash*, as a decoder segfault would."""
    from mffmoe.scan.decode import decode_file

    if Path(path).name.startswith("crash"):
        os._exit(139)
    yield from decode_file(path, cfg)


def comparable(row: dict) -> dict:
    """A row without the fields that describe the run rather than the input."""
    from mffmoe.scan.schema import RUN_COLUMNS

    return {k: v for k, v in row.items() if k not in RUN_COLUMNS}


def assert_same_rows(a: list[dict], b: list[dict], tol: float = 1e-6) -> None:
    """Equal rows, scores to `tol` (batching may regroup the same math)."""
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for x, y in zip(a, b, strict=True):
        x, y = comparable(x), comparable(y)
        for key in x:
            if key in ("score", "confidence", "expert_std") and x[key] is not None:
                assert abs(x[key] - y[key]) <= tol, (x["path"], key, x[key], y[key])
            elif key == "expert_scores" and x[key] is not None:
                assert len(x[key]) == len(y[key]) and all(abs(p - q) <= tol
                                                          for p, q in zip(x[key], y[key], strict=True))
            else:
                assert x[key] == y[key], (x["path"], key, x[key], y[key])


def crashing_decode_batch(batch, cfg):
    """Ray Data form of `crashing_decode` (the worker process dies on crash* files)."""
    from mffmoe.scan.decode import to_columns

    for path in batch["path"]:
        for part in crashing_decode(str(path), cfg):
            yield to_columns([part])


def make_face_collection(root: Path) -> dict[str, Path]:
    """A folder for faces mode: an image with two real faces, a face-free image, a short video with two
    faces moving across the frame (as tests/test_faces.py's, smaller)."""

    from mffmoe.testing.faces import crossing_video, face_free_scene, face_scene

    root.mkdir(parents=True, exist_ok=True)
    made = {"scene": root / "scene.png", "free": root / "free.png", "video": root / "two.mp4"}
    face_scene(11, 640, 480, n_faces=2, sizes=(90, 160)).image.save(made["scene"])
    face_free_scene(3, 320, 240).save(made["free"])
    crossing_video(made["video"])
    return made


def assert_same_result(a, b, tol: float = 1e-6, where: str = "") -> None:
    """Two results (as dicts) equal, floats to `tol`, their processing times aside."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            if k != "processing_time":
                assert_same_result(a[k], b[k], tol, f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), (where, a, b)
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_result(x, y, tol, f"{where}[{n}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert isinstance(b, float | int) and abs(a - b) <= tol, (where, a, b)
    else:
        assert a == b, (where, a, b)
