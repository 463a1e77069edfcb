"""The PDF, printed from the HTML page by headless Chromium (`--print-to-pdf`).

Why Chromium and not a Python renderer: the page is then printed by the same engine that shows it (the
SVG chart, CSS and data: images exactly as on screen), the project already installs Chromium for its
browser test, and nothing new goes into the virtualenv. Measurements and the alternatives tried:
docs/report.md. The browser runs with networking off and a throw-away profile; the page itself refers
to nothing outside the file (and forbids it by its Content-Security-Policy).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mffmoe._util.fs import atomic_path
from mffmoe.errors import MFFMoEError, MissingExtraError

#: Looked for in this order (MFFMOE_CHROMIUM names another binary).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        "--no-pdf-header-footer", "--hide-scrollbars", "--mute-audio")
TIMEOUT_S = 120.0


class ReportRenderError(MFFMoEError):
    """The PDF could not be printed (the browser failed or timed out)."""

    kind = "report_render_failed"


def find_browser() -> str:
    """The Chromium binary; MissingExtraError (before any work) when there is none."""
    named = os.environ.get("MFFMOE_CHROMIUM")
    if named:
        if shutil.which(named) or Path(named).is_file():
            return shutil.which(named) or named
        raise MissingExtraError(f"MFFMOE_CHROMIUM={named}: no such program")
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise MissingExtraError("PDF reports need Chromium, which is not installed: apt-get install -y chromium "
                            "(scripts/setup.sh installs it), or set MFFMOE_CHROMIUM; HTML and JSON need nothing")


def html_to_pdf(html: str, out: str | os.PathLike[str], *, timeout: float = TIMEOUT_S) -> Path:
    """Print `html` (a self-contained page) to the PDF file `out`, written atomically."""
    browser = find_browser()
    target = Path(out)
    with tempfile.TemporaryDirectory(prefix="mffmoe-pdf-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        printed = Path(tmp) / "report.pdf"
        cmd = [browser, *ARGS, f"--user-data-dir={tmp}/profile", f"--print-to-pdf={printed}", page.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "HOME": tmp})
        except subprocess.TimeoutExpired:
            raise ReportRenderError(f"Chromium did not print the PDF within {timeout:.0f} s") from None
        except OSError as e:
            raise ReportRenderError(f"cannot run {browser}: {e.strerror or e}") from None
        if proc.returncode != 0 or not printed.is_file() or printed.stat().st_size == 0:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            raise ReportRenderError(f"Chromium failed to print the PDF (exit {proc.returncode}): "
                                    + (" | ".join(tail) or "no output"))
        with atomic_path(target) as tmp_target:
            shutil.copyfile(printed, tmp_target)
    return target
