"""Exact early exit: run the experts cheapest first and stop once the label cannot change.

Why it is exact: every expert's P(fake) lies in [0, 1], so after experts S of E have run, the ensemble
mean lies in [sum_S / E, (sum_S + E - |S|) / E]. The label is FAKE iff mean >= threshold, so it is fixed
once low >= threshold (FAKE) or high < threshold (REAL); we stop there. A margin of 1e-12 keeps summation
-order rounding from ever deciding a tie the other way.

Experts run in groups of the engine's parallelism (two on a 2-core CPU), cheapest first by FLOPs, so
the cores stay busy; each group runs only on the images still undecided.

Videos are decided per video, not per frame: the video score is a pooling of frame scores, and for a
monotone pooling (mean, median) it lies in [pool(frame lows), pool(frame highs)]. All sampled frames run
the same experts until that interval is on one side of the threshold, so the video's label equals the
full ensemble's. Frame entries then hold the mean of the experts that ran, and their own labels are not
guaranteed. Non-monotone poolings (`confident`) get no early exit: all experts run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from mffmoe.engine.costs import cheapest_first
from mffmoe.pooling import get_pooling

MARGIN = 1e-12
#: Poolings that never decrease when a frame score increases: their interval is pool(lows)..pool(highs).
MONOTONE_POOLINGS = frozenset({"mean", "median"})


def interval(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, E] per-expert P(fake), NaN where not run -> (low, high) bounds of each row's full mean."""
    n_experts = probs.shape[1]
    ran = ~np.isnan(probs)
    partial = np.where(ran, probs, 0.0).sum(axis=1)
    missing = n_experts - ran.sum(axis=1)
    return partial / n_experts, (partial + missing) / n_experts


def decided(low: np.ndarray, high: np.ndarray, threshold: float) -> np.ndarray:
    """True where the label is fixed whatever the remaining experts say."""
    return (low >= threshold + MARGIN) | (high < threshold - MARGIN)


def groups(costs: Sequence[float], size: int) -> list[list[int]]:
    order = cheapest_first(costs)
    size = max(1, size)
    return [order[i:i + size] for i in range(0, len(order), size)]


@dataclass
class Outcome:
    probs: np.ndarray       # [N, E], NaN where an expert did not run
    low: np.ndarray         # [N]
    high: np.ndarray        # [N]

    @property
    def experts_run(self) -> np.ndarray:
        return (~np.isnan(self.probs)).sum(axis=1)


def _engine_groups(engine) -> list[list[int]]:
    costs = getattr(engine, "costs", None) or [1.0] * len(engine.roster)
    return groups(costs, getattr(engine, "parallelism", 1))


def run_images(engine, batch: torch.Tensor, threshold: float) -> Outcome:
    """Early exit per image over a batch: each expert group runs only on the still-undecided rows."""
    n, n_experts = len(batch), len(engine.roster)
    probs = np.full((n, n_experts), np.nan)
    todo = np.arange(n)
    for group in _engine_groups(engine):
        if len(todo) == 0:
            break
        probs[np.ix_(todo, group)] = engine.predict_experts(batch[torch.as_tensor(todo)], group)
        low, high = interval(probs[todo])
        todo = todo[~decided(low, high, threshold)]
    low, high = interval(probs)
    return Outcome(probs, low, high)


class VideoEarlyExit:
    """Per-video early exit. `add` scores each decoded batch with the cheapest group at once (so decoding
    still overlaps inference) and keeps the frames; `finish` runs further groups on all frames until the
    pooled interval is decided."""

    def __init__(self, engine, pooling: str, threshold: float) -> None:
        self.engine = engine
        self.pooling = pooling
        self.pool: Callable[[Sequence[float]], float] = get_pooling(pooling)
        self.threshold = threshold
        self.groups = _engine_groups(engine)
        if pooling not in MONOTONE_POOLINGS:  # no valid bound: run everything, in one group
            self.groups = [sorted(i for g in self.groups for i in g)]
        self.frames: list[torch.Tensor] = []
        self.rows: list[np.ndarray] = []

    def add(self, batch: torch.Tensor) -> np.ndarray:
        rows = np.full((len(batch), len(self.engine.roster)), np.nan)
        rows[:, self.groups[0]] = self.engine.predict_experts(batch, self.groups[0])
        self.frames.extend(batch)
        self.rows.extend(rows)
        return rows

    def bounds(self, probs: np.ndarray) -> tuple[float, float]:
        low, high = interval(probs)
        return float(self.pool(low)), float(self.pool(high))

    def finish(self, batch_size: int) -> Outcome:
        probs = np.stack(self.rows) if self.rows else np.zeros((0, len(self.engine.roster)))
        for group in self.groups[1:]:
            lo, hi = self.bounds(probs)
            if decided(np.array([lo]), np.array([hi]), self.threshold)[0]:
                break
            for i in range(0, len(self.frames), batch_size):
                chunk = torch.stack(self.frames[i:i + batch_size])
                probs[i:i + len(chunk), group] = self.engine.predict_experts(chunk, group)
        self.frames.clear()
        low, high = interval(probs)
        return Outcome(probs, low, high)
