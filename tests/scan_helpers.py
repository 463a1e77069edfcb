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
            if key in ("score", "confidence") and x[key] is not None:
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
