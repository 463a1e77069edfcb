"""Service counters with prometheus-client: `/metrics` exposes them, `/stats` is a JSON view of them.

Each app has its own `CollectorRegistry` (not the process-wide default), so several apps in one
process (tests, embedding) count separately and never collide on metric names.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

OUTCOMES = ("done", "failed", "cancelled", "rejected")
#: Admission to result: a small image takes well under a second, a long video minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.started = time.time()
        self._t0 = time.monotonic()
        self.responses = Counter("mffmoe_http_responses", "HTTP responses by status code", ["status"],
                                 registry=registry)
        self.analyses = Counter("mffmoe_analyses", "Analyses by outcome: done, failed, cancelled, rejected "
                                "(refused for a full queue)", ["outcome"], registry=registry)
        self.errors = Counter("mffmoe_errors", "Error answers, and failures of stored jobs, by kind", ["kind"],
                              registry=registry)
        self.latency = Histogram("mffmoe_analysis_latency_seconds", "Admission to result, successful analyses",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.processing = Histogram("mffmoe_analysis_processing_seconds", "The detector's own processing_time, "
                                    "successful analyses", buckets=LATENCY_BUCKETS, registry=registry)
        Gauge("mffmoe_start_time_seconds", "When the app was created (Unix time)",
              registry=registry).set(self.started)
        self.queued = Gauge("mffmoe_jobs_queued", "Admitted jobs not running yet (uploading or waiting)",
                            registry=registry)
        self.running = Gauge("mffmoe_jobs_running", "Jobs on a worker thread", registry=registry)
        for outcome in OUTCOMES:
            self.analyses.labels(outcome)  # present (as 0) before the first one

    # -- updates (any thread) ----------------------------------------------------------------------
    def count_response(self, status: int) -> None:
        self.responses.labels(str(status)).inc()

    def count_error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def count_outcome(self, outcome: str, *, error_kind: str | None = None, latency: float | None = None,
                      processing: float | None = None) -> None:
        self.analyses.labels(outcome).inc()
        if error_kind:
            self.count_error(error_kind)
        if latency is not None:
            self.latency.observe(latency)
            self.processing.observe(processing or 0.0)

    def watch_queue(self, queued: Callable[[], float], running: Callable[[], float]) -> None:
        """Read the queue gauges from the job manager at scrape time."""
        self.queued.set_function(queued)
        self.running.set_function(running)

    # -- reads -------------------------------------------------------------------------------------
    @property
    def uptime(self) -> float:
        return time.monotonic() - self._t0

    @property
    def mean_processing(self) -> float | None:
        total, n = _sum_count(self.processing)
        return total / n if n else None

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The Prometheus text (or OpenMetrics, when the scraper asks for it) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def snapshot(self) -> dict[str, Any]:
        """The `/stats` fields."""
        by_status = _by_label(self.responses, "status")
        outcomes = _by_label(self.analyses, "outcome")
        latency, n = _sum_count(self.latency)
        processing, _ = _sum_count(self.processing)
        return {
            "uptime_s": round(self.uptime, 3),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "requests_served": sum(by_status.values()),
            "requests_by_status": {k: by_status[k] for k in sorted(by_status, key=int)},
            "analyses": {k: outcomes.get(k, 0) for k in OUTCOMES},
            "errors": _by_label(self.errors, "kind"),
            "latency_s": {"mean": latency / n if n else None, "mean_processing": processing / n if n else None,
                          "count": n},
        }


def _by_label(counter: Counter, label: str) -> dict[str, int]:
    return {s.labels[label]: int(s.value) for family in counter.collect() for s in family.samples
            if s.name.endswith("_total")}


def _sum_count(histogram: Histogram) -> tuple[float, int]:
    samples = {s.name.rsplit("_", 1)[-1]: s.value for family in histogram.collect() for s in family.samples
               if s.name.endswith(("_sum", "_count"))}
    return samples.get("sum", 0.0), int(samples.get("count", 0))


class CountResponses:
    """Pure ASGI middleware (streams pass through untouched): counts responses by status."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.count_response(status)
