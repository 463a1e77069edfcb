"""Scoring preprocessed pixels in batches: the one copy used by `Detector.analyze_many`, the local scan
runner and the Ray replicas (stack, chunk by batch size, score, share the time out per item), and the
per-video scoring the Detector uses (plain, or decided per video by an early-exit engine)."""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from mffmoe.engine.base import Engine
from mffmoe.engine.early_exit import EarlyExitEngine, Outcome, interval
from mffmoe.pooling import Pooling

#: A video of one batch or less is still scored in this many steps, so that its progress moves. Always,
#: watched or not: the scores must not depend on whether anyone watches.
SHORT_VIDEO_STEPS = 4


def useful_batch(engine: Engine, batch_size: int) -> int:
    """`batch_size` fitted to what the engine gains from: at most its `max_useful_batch` (one image at a
    time: more only holds more decoded inputs), at least its `min_useful_batch` (an engine that builds each
    expert per call pays that per call). Scores do not depend on it."""
    size = max(1, batch_size)
    low = getattr(engine, "min_useful_batch", None)
    high = getattr(engine, "max_useful_batch", None)
    size = max(size, low) if low else size
    return min(size, high) if high else size


def video_step(planned: int, batch_size: int, engine: Engine) -> int:
    """Frames per model call for a video of `planned` samples. Calls of equal size (100 frames at batch 32:
    four of 25, not 32+32+32+4); a video of one batch or less in SHORT_VIDEO_STEPS calls so its progress
    moves, except on an engine that builds its experts per call (`min_useful_batch`), where each call costs."""
    planned, size = max(1, planned), max(1, batch_size)
    if planned <= size and not getattr(engine, "min_useful_batch", None):
        return max(1, -(-planned // SHORT_VIDEO_STEPS))
    calls = -(-planned // size)
    return -(-planned // calls)


def lookahead(batch_size: int, engine: Engine, faces: bool = False) -> int:
    """Items decoded ahead of the engine. Two batches for an engine that gains from large batches, so
    decoding never waits on it. One batch for an engine that scores one image at a time
    (`max_useful_batch`: decoding a frame takes a small fraction of the experts' time, so more ahead only
    holds more decoded inputs, 3 MB each) or that builds its experts per call (`min_useful_batch`: a call
    of 32 inputs takes tens of seconds). Half of that in faces mode, where an item is a frame or an image
    of about two faces, each a crop and its input."""
    size = max(1, batch_size)
    if getattr(engine, "min_useful_batch", None):
        return max(size // 2 if faces else size, 4)
    if getattr(engine, "max_useful_batch", None):
        return max(size // 2 if faces else size, 2)
    return max(2 * size, 4)


def score_batch(engine: Engine, batch: np.ndarray, batch_size: int) -> np.ndarray:
    """[N, 3, S, S] -> [N, E] per-expert P(fake), in model calls of at most `batch_size` images."""
    step = max(1, batch_size)
    parts = [engine.predict(batch[i:i + step]) for i in range(0, len(batch), step)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, len(engine.roster)))


def stack(pixels: Sequence[np.ndarray]) -> np.ndarray:
    """Per-item [3, S, S] pixels -> one [N, 3, S, S] float32 batch."""
    return np.stack([np.asarray(p, dtype=np.float32) for p in pixels])


def score_items(engine: Engine, pixels: Sequence[np.ndarray] | np.ndarray,
                batch_size: int) -> tuple[np.ndarray, float]:
    """Score a batch of items (per-item pixels, or already stacked): their [N, E] expert scores and each
    item's share of the time it took."""
    start = time.perf_counter()
    experts = score_batch(engine, pixels if isinstance(pixels, np.ndarray) else stack(pixels), batch_size)
    return experts, (time.perf_counter() - start) / max(1, len(pixels))


class VideoScoring(Protocol):
    """A video's frames scored batch by batch as they are decoded, then settled on its final frames."""

    def add(self, frame_indices: Sequence[int], batch: np.ndarray) -> None: ...

    def finish(self, indices: Iterable[int]) -> Outcome: ...


class FullVideo:
    """Every expert on every frame: each batch is scored as it comes."""

    def __init__(self, engine: Engine, batch_size: int) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.rows: dict[int, np.ndarray] = {}

    def add(self, frame_indices: Sequence[int], batch: np.ndarray) -> None:
        self.rows.update(zip(frame_indices, score_batch(self.engine, batch, self.batch_size), strict=True))

    def finish(self, indices: Iterable[int]) -> Outcome:
        keep = [i for i in indices if i in self.rows]
        probs = np.stack([self.rows[i] for i in keep]) if keep else np.zeros((0, len(self.engine.roster)))
        self.rows.clear()
        low, high = interval(probs)
        return Outcome(probs, low, high, keep)


def begin_video(engine: Engine, pooling: Pooling, batch_size: int) -> VideoScoring:
    """Per-video scoring: an early-exit engine decides per video, any other engine scores every frame."""
    if isinstance(engine, EarlyExitEngine):
        return engine.begin_video(pooling, batch_size)
    return FullVideo(engine, batch_size)
