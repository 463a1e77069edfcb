"""Scans of whole collections: resumable, deduplicated, on one machine or on Ray (`mffmoe scan`)."""
from __future__ import annotations

__all__ = ["ScanOptions", "ScanSummary", "read_results", "run_scan"]


def __getattr__(name: str):
    # Lazy: pyarrow, Ray and torch load only when a scan is actually used.
    if name in ("ScanOptions", "run_scan"):
        from mffmoe.scan import job
        return getattr(job, name)
    if name == "ScanSummary":
        from mffmoe.scan.progress import ScanSummary
        return ScanSummary
    if name == "read_results":
        from mffmoe.scan.store import read_results
        return read_results
    raise AttributeError(name)
