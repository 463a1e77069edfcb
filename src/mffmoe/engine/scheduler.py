"""Expert-level parallelism: the experts are independent, so on a small CPU we run several at once, one
core each, instead of splitting every layer over all cores.

Why: at batch 1 the late layers of these networks are small (16x16 maps), and splitting them over
threads costs synchronisation on every op; whole experts in parallel keep each core busy on its own
network. Experts are started longest first (LPT scheduling), which balances two cores closely for the
default roster (docs/performance.md).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mffmoe._util.activations import ACTIVATIONS
from mffmoe.engine.device import cpu_count


def plan_threads(n_experts: int, workers: int | None = None, cores: int | None = None) -> tuple[int, int]:
    """(workers, intra-op threads per worker): one expert per core when there are enough experts."""
    cores = cores or cpu_count()
    if workers is None:
        workers = min(cores, max(1, n_experts))
    workers = max(1, min(workers, max(1, n_experts)))
    return workers, max(1, cores // workers)


class ExpertScheduler:
    """Runs `run_one(expert_index, batch) -> [B]` for a list of experts on `workers` threads."""

    def __init__(self, run_one: Callable[[int, object], np.ndarray], costs: Sequence[float], workers: int) -> None:
        self.run_one = run_one
        self.costs = list(costs)
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="mffmoe-expert") if self.workers > 1 else None
        #: held for each batch (one at a time: the pool is sized to the cores already); an engine takes it
        #: too to change which experts it holds
        self.lock = threading.Lock()

    def run(self, batch: object, experts: Sequence[int]) -> np.ndarray:
        experts = list(experts)
        if not experts:
            raise ValueError("no experts to run")
        with self.lock:
            if self._pool is None or len(experts) == 1:
                cols = [self._one(i, batch) for i in experts]  # face detection may run between two experts
            else:
                with ACTIVATIONS:
                    order = sorted(range(len(experts)), key=lambda k: -self.costs[experts[k]])
                    futures = {k: self._pool.submit(self.run_one, experts[k], batch) for k in order}
                    cols = [futures[k].result() for k in range(len(experts))]
        return np.stack([np.asarray(c, dtype=np.float64).reshape(-1) for c in cols], axis=1)

    def _one(self, i: int, batch: object) -> np.ndarray:
        with ACTIVATIONS:  # one network's activations at a time (mffmoe._util.activations)
            return self.run_one(i, batch)

    def close(self) -> None:
        """Let the pool's threads end (`Engine.close`); running experts finish, no new batch starts."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
