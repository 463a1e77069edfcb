"""Service counters for `/stats`: uptime, requests, outcomes, latency. Thread-safe (workers update it)."""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any


class Stats:
    def __init__(self) -> None:
        self.started = time.time()
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self.requests = 0
        self.by_status: Counter[int] = Counter()
        self.outcomes: Counter[str] = Counter()   # done / failed / cancelled / rejected
        self.errors: Counter[str] = Counter()     # error kind -> count
        self._latency_sum = 0.0                   # admission -> result, successful analyses
        self._processing_sum = 0.0                # the detector's own processing_time
        self._latency_n = 0

    def count_request(self, status: int) -> None:
        with self._lock:
            self.requests += 1
            self.by_status[status] += 1

    def count_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def count_outcome(self, outcome: str, *, error_kind: str | None = None, latency: float | None = None,
                      processing: float | None = None) -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if error_kind:
                self.errors[error_kind] += 1
            if latency is not None:
                self._latency_sum += latency
                self._processing_sum += processing or 0.0
                self._latency_n += 1

    @property
    def mean_processing(self) -> float | None:
        with self._lock:
            return self._processing_sum / self._latency_n if self._latency_n else None

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._t0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            n = self._latency_n
            return {
                "uptime_s": round(self.uptime, 3),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "requests_served": self.requests,
                "requests_by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "analyses": {k: self.outcomes.get(k, 0) for k in ("done", "failed", "cancelled", "rejected")},
                "errors": dict(self.errors),
                "latency_s": {"mean": self._latency_sum / n if n else None,
                              "mean_processing": self._processing_sum / n if n else None, "count": n},
            }
