"""Frame-score pooling: how a video's score is made from its frames' scores. A registry of functions.

- `mean` (default): the spec's and the host's rule.
- `confident`: the DFDC (Kaggle Deepfake Detection Challenge, 2020) winner's "confident strategy":
  if enough frames are confidently fake (score > 0.8; more than n/2.5 of them and more than 11), the
  mean of those; else if over 90% of the frames are confidently real (< 0.2), the mean of those; else
  the mean of all. A few confidently fake frames are then not averaged away by many neutral ones.
- `median`: robust to a minority of outlier frames.

A pooling is monotone when raising one frame's score never lowers the video's (mean, median): only then
does a video's score lie between the pooled lower and upper bounds of its frames, which early exit needs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from mffmoe.errors import ConfigError


def mean(scores: ArrayLike) -> float:
    return float(np.mean(np.asarray(scores, dtype=np.float64)))


def median(scores: ArrayLike) -> float:
    return float(np.median(np.asarray(scores, dtype=np.float64)))


def confident(scores: ArrayLike, fake_t: float = 0.8, real_t: float = 0.2, min_fakes: int = 11) -> float:
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    fakes = int(np.count_nonzero(s > fake_t))
    if fakes > n / 2.5 and fakes > min_fakes:
        return float(np.mean(s[s > fake_t]))
    if np.count_nonzero(s < real_t) > 0.9 * n:
        return float(np.mean(s[s < real_t]))
    return float(np.mean(s))


@dataclass(frozen=True)
class Pooling:
    """A named pooling function: frame scores -> the video's score."""

    name: str
    fn: Callable[[ArrayLike], float]
    monotone: bool

    def __call__(self, scores: ArrayLike) -> float:
        return self.fn(scores)


POOLINGS: dict[str, Pooling] = {p.name: p for p in (Pooling("mean", mean, monotone=True),
                                                    Pooling("confident", confident, monotone=False),
                                                    Pooling("median", median, monotone=True))}


def get_pooling(name: str) -> Pooling:
    try:
        return POOLINGS[name]
    except KeyError:
        raise ConfigError(f"unknown pooling {name!r}; choose from {sorted(POOLINGS)}") from None
