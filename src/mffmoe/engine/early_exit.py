"""Exact early exit, as an engine wrapper: run the experts cheapest first and stop once the label cannot
change.

Why it is exact: every expert's P(fake) lies in [0, 1], so after experts S of E have run, the ensemble
mean lies in [sum_S / E, (sum_S + E - |S|) / E]. The label is FAKE iff mean >= threshold, so it is fixed
once low >= threshold (FAKE) or high < threshold (REAL); we stop there. A margin of 1e-12 keeps summation
-order rounding from ever deciding a tie the other way.

Experts run in groups of the engine's `workers` (two on a 2-core CPU), cheapest first by the engine's
`costs`, so the cores stay busy; each group runs only on the images still undecided.

`EarlyExitEngine.predict` has the engine's interface, with NaN for the experts that did not run. Videos
are decided per video, not per frame (`begin_video`): the video score is a pooling of frame scores, and
for a monotone pooling (mean, median) it lies in [pool(frame lows), pool(frame highs)]. All sampled
frames run the same experts until that interval is on one side of the threshold, so the video's label
equals the full ensemble's. Frame entries then hold the mean of the experts that ran, and their own
labels are not guaranteed. Non-monotone poolings (`confident`) get no early exit: all experts run.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mffmoe.engine.base import Engine
from mffmoe.engine.costs import cheapest_first
from mffmoe.pooling import Pooling

MARGIN = 1e-12


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
    frames: list[int] = field(default_factory=list)  # videos: the frame index of each row

    @property
    def experts_run(self) -> np.ndarray:
        return (~np.isnan(self.probs)).sum(axis=1)


def run_images(engine: Engine, batch: np.ndarray, threshold: float) -> Outcome:
    """Early exit per image over a batch: each expert group runs only on the still-undecided rows."""
    n, n_experts = len(batch), len(engine.roster)
    probs = np.full((n, n_experts), np.nan)
    todo = np.arange(n)
    for group in groups(engine.costs, engine.workers):
        if len(todo) == 0:
            break
        probs[np.ix_(todo, np.asarray(group))] = engine.predict_experts(batch[np.asarray(todo)], group)
        low, high = interval(probs[todo])
        todo = todo[~decided(low, high, threshold)]
    low, high = interval(probs)
    return Outcome(probs, low, high)


class EarlyExitEngine(Engine):
    """`engine` with early exit at `threshold`: an Engine itself (the same `predict`/`predict_experts`,
    NaN for experts that did not run), plus `begin_video` for per-video decisions. A light wrapper made
    per call: it owns no scheduler of its own, and `close()` leaves the wrapped engine open."""

    name = "early_exit"

    def __init__(self, engine: Engine, threshold: float) -> None:  # no super().__init__: no scheduler here
        self.engine = engine
        self.threshold = threshold
        self.device, self.roster, self.input_size = engine.device, engine.roster, engine.input_size
        self.costs, self.workers = engine.costs, engine.workers
        self.min_useful_batch = getattr(engine, "min_useful_batch", None)
        self.max_useful_batch = getattr(engine, "max_useful_batch", None)

    def _run_expert(self, i: int, x: object) -> np.ndarray:
        raise NotImplementedError("EarlyExitEngine delegates whole calls to the engine it wraps")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return run_images(self.engine, batch, self.threshold).probs

    def predict_experts(self, batch: np.ndarray, experts: Sequence[int]) -> np.ndarray:
        return self.engine.predict_experts(batch, experts)

    def describe(self) -> dict[str, Any]:
        return {**self.engine.describe(), "early_exit_threshold": self.threshold}

    def close(self) -> None:
        pass

    def begin_video(self, pooling: Pooling, batch_size: int) -> VideoEarlyExit:
        return VideoEarlyExit(self, pooling, batch_size)


class VideoEarlyExit:
    """Per-video early exit. `add` scores each decoded batch with the cheapest group at once (so decoding
    still overlaps inference) and keeps the frames that later groups may need; `finish` takes the final
    frame indices and runs further groups on exactly those frames until the pooled interval is decided."""

    def __init__(self, early: EarlyExitEngine, pooling: Pooling, batch_size: int) -> None:
        self.engine = early.engine
        self.pool = pooling
        self.threshold = early.threshold
        self.batch_size = max(1, batch_size)
        self.groups = groups(early.costs, early.workers)
        if not pooling.monotone:  # no valid bound: run everything, in one group
            self.groups = [sorted(i for g in self.groups for i in g)]
        self.rows: dict[int, np.ndarray] = {}
        self.frames: dict[int, np.ndarray] = {}  # kept only while later groups may run

    def add(self, frame_indices: Sequence[int], batch: np.ndarray) -> None:
        rows = np.full((len(batch), len(self.engine.roster)), np.nan)
        rows[:, self.groups[0]] = self.engine.predict_experts(batch, self.groups[0])
        for index, row, frame in zip(frame_indices, rows, batch, strict=True):
            self.rows[index] = row
            if len(self.groups) > 1:
                self.frames[index] = frame

    def bounds(self, probs: np.ndarray) -> tuple[float, float]:
        low, high = interval(probs)
        return float(self.pool(low)), float(self.pool(high))

    def finish(self, indices: Iterable[int]) -> Outcome:
        """Decide on the frames of `indices` that were added (and only those), in that order."""
        keep = [i for i in indices if i in self.rows]
        probs = np.stack([self.rows[i] for i in keep]) if keep else np.zeros((0, len(self.engine.roster)))
        for group in self.groups[1:] if keep else []:
            lo, hi = self.bounds(probs)
            if decided(np.array([lo]), np.array([hi]), self.threshold)[0]:
                break
            for start in range(0, len(keep), self.batch_size):
                chunk = np.stack([self.frames[i] for i in keep[start:start + self.batch_size]])
                probs[start:start + len(chunk), group] = self.engine.predict_experts(chunk, group)
        self.rows.clear()
        self.frames.clear()
        low, high = interval(probs)
        return Outcome(probs, low, high, keep)
