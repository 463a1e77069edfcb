"""One report in one of its forms, as bytes: what the CLI writes and what a server serves
(`GET /jobs/{id}/report?format=html|pdf|json`), from one place so the two never differ."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mffmoe.errors import ConfigError

#: Media types of the forms.
CONTENT_TYPES = {"json": "application/json", "html": "text/html; charset=utf-8", "pdf": "application/pdf"}


def render_as(report: Mapping[str, Any], fmt: str, media: str | os.PathLike[str] | None = None,
              page: str | None = None) -> bytes:
    """`report` as `fmt` (json: the signed layout `sign.dumps`; html: the self-contained page; pdf: printed
    from it by Chromium). `media` is the analysed file, for the heatmaps and face thumbnails (default: the
    report's input path). `page`: the HTML page made earlier (a server makes it when the job ends, while the
    file is still there for the heatmaps). A ConfigError for an unknown format; pdf may raise
    MissingExtraError or ReportRenderError."""
    if fmt == "json":
        from mffmoe.report.sign import dumps

        return dumps(report)
    if fmt not in CONTENT_TYPES:
        raise ConfigError(f"unknown report format {fmt!r}; choose from {', '.join(CONTENT_TYPES)}")
    from mffmoe.report.html import render_html

    page = render_html(report, media) if page is None else page
    if fmt == "html":
        return page.encode("utf-8")
    from mffmoe.report.pdf import html_to_pdf

    with tempfile.TemporaryDirectory(prefix="mffmoe-report-") as tmp:
        return html_to_pdf(page, Path(tmp) / "report.pdf").read_bytes()
