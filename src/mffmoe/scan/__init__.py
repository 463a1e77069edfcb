"""Scans of whole collections: resumable, deduplicated, on one machine or on Ray (`mffmoe scan`).

Attributes are imported lazily: pyarrow, Ray and torch load only when a scan is actually used.
"""
from __future__ import annotations

from mffmoe._util.lazy import lazy_exports

_EXPORTS = {
    "ScanOptions": "mffmoe.scan.job",
    "run_scan": "mffmoe.scan.job",
    "ScanSummary": "mffmoe.scan.progress",
    "read_results": "mffmoe.scan.store",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
