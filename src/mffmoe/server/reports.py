"""Evidence reports of stored jobs, for `GET /jobs/{id}/report?format=json|html|pdf`.

A report hashes the analysed file, and a job's upload is deleted when the job ends: so its content is
built then (`mffmoe.report.build_report`) and kept beside the job's frame thumbnails (`thumbnails.folder`,
pruned with them), and each request renders it (`mffmoe.report.render_as`, as `mffmoe report` writes it).
A report that cannot be built is logged and missing, never a failed job.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mffmoe._util.fs import atomic_write
from mffmoe.inference.detector import Detector
from mffmoe.results import AnalysisResult

log = logging.getLogger("mffmoe.server")

NAME = "report.json"


def keep(root: Path | None, job_id: str, upload: Path, filename: str | None, result: AnalysisResult,
         detector: Detector) -> bool:
    """Build and store the job's report (the file named as the client sent it); True when stored."""
    if root is None or not job_id.isalnum():
        return False
    try:
        from mffmoe.report.content import build_report
        from mffmoe.report.sign import dumps

        report = build_report(upload, result, detector, provenance=result.provenance)
        if filename:  # not the upload's temporary name
            report["input"].update(path=filename, name=Path(filename).name)
        folder = root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / NAME, "wb") as f:
            f.write(dumps(report))
        return True
    except Exception:
        log.warning("job %s: no report", job_id, exc_info=True)
        return False


def load(root: Path | None, job_id: str) -> dict[str, Any] | None:
    """The stored report of the job, or None when it has none."""
    if root is None or not job_id.isalnum():
        return None
    file = root / job_id / NAME
    if not file.is_file():
        return None
    data: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return data
