"""Evidence reports of stored jobs, for `GET /jobs/{id}/report?format=json|html|pdf`.

A report hashes the analysed file and draws its heatmaps on it, and a job's upload is deleted when the job
ends: so its content (`mffmoe.report.build_report`) and its HTML page are made then, and kept beside the
job's frame thumbnails (`thumbnails.folder`, pruned with them); each request serves them (`render_as`, as
`mffmoe report` writes them; a PDF is printed from the kept page).
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
PAGE = "report.html"


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
        from mffmoe.report.html import render_html

        page = render_html(report, upload)  # while the upload is there: the heatmaps are drawn on it
        with atomic_write(folder / PAGE, "wb") as f:
            f.write(page.encode("utf-8"))
        with atomic_write(folder / NAME, "wb") as f:  # last: a job with a report has its page
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


def page(root: Path | None, job_id: str) -> str | None:
    """The job's kept HTML page, or None."""
    if root is None or not job_id.isalnum():
        return None
    file = root / job_id / PAGE
    return file.read_text(encoding="utf-8") if file.is_file() else None
