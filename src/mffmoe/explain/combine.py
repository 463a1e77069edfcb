"""One ensemble map from the experts' maps.

Each expert's map is scaled to [0, 1] by its own maximum (experts' raw CAM values are on unrelated
scales), then the maps are averaged with weights equal to each expert's share of the summed P(fake):
the ensemble score is the mean of the experts' P(fake), so an expert's P(fake) is exactly its
contribution to the score, and an expert that found little evidence for fake (P(fake) near 0) adds
little to the map. When every expert says 0 the weights are equal. The result is scaled to [0, 1] again.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mffmoe.errors import ConfigError


def normalise(values: np.ndarray) -> np.ndarray:
    """Negative values clipped (they are evidence against fake), then divided by the maximum; an all-zero
    map stays zero."""
    arr = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0), 0.0, None)
    top = float(arr.max()) if arr.size else 0.0
    return arr / top if top > 0 else arr


def combination_weights(scores: Sequence[float]) -> np.ndarray:
    """Each expert's share of the summed P(fake) (equal shares when they are all 0)."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    if p.ndim != 1 or p.size == 0:
        raise ConfigError("combination needs one score per expert")
    total = float(p.sum())
    return p / total if total > 0 else np.full(p.size, 1.0 / p.size)


def combine(maps: Sequence[np.ndarray], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(ensemble map in [0, 1], weights) from same-shaped expert maps and the experts' P(fake)."""
    if len(maps) != len(scores) or not maps:
        raise ConfigError(f"{len(maps)} map(s) for {len(scores)} expert score(s)")
    shapes = {np.shape(m) for m in maps}
    if len(shapes) != 1:
        raise ConfigError(f"expert maps differ in shape: {sorted(shapes)}")
    weights = combination_weights(scores)
    total = np.zeros(np.shape(maps[0]), dtype=np.float32)
    for m, w in zip(maps, weights, strict=True):
        total += np.float32(w) * normalise(m)
    return normalise(total), weights
