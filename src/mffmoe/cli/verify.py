"""`mffmoe verify`: hash, structure and golden checks of a set of weights (`mffmoe.inference.golden`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mffmoe.cli.options import ReportFormat, WeightsOpt
from mffmoe.cli.output import err, fail, one_line
from mffmoe.errors import MFFMoEError

GoldenOpt = Annotated[Path | None, typer.Option(
    "--golden", "-g", exists=True, file_okay=False, dir_okay=True, metavar="DIR",
    help="Folder of files named <anything>_should_be_<score>.<ext>: each, analyzed in frame mode, must score "
         "<score> to 1e-3.")]
_STYLE = {"pass": "green", "fail": "bold red", "unknown": "yellow", "skipped": "dim"}


def verify(
    weights: WeightsOpt = None,
    golden: GoldenOpt = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="json: one object with every check.")]
    = ReportFormat.table,
) -> None:
    """Check that weights are intact: SHA-256 of each file, structure, and golden files.

    The hashes are compared with the published ones where the package knows them, else printed (status
    `unknown`) to compare with the publisher's. Exit status 1 when any check fails, 2 when there are no
    weights to check."""
    from mffmoe.config import resolve_weights_dir
    from mffmoe.inference.golden import verify as run_checks

    try:
        report = run_checks(resolve_weights_dir(weights), golden, device="auto")
    except MFFMoEError as e:
        raise fail(str(e)) from None
    if fmt is ReportFormat.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"{report.source} ({report.layout})", header_style="bold")
        for col in ("check", "status", "detail"):
            table.add_column(col, overflow="fold")
        for c in report.checks:
            table.add_row(escape(c.name), f"[{_STYLE[c.status]}]{c.status.upper()}[/]", escape(c.detail))
        Console(width=160).print(table)
    counts = {s: sum(c.status == s for c in report.checks) for s in _STYLE}
    one_line(", ".join(f"{n} {s}" for s, n in counts.items()), style=None)
    if report.failed:
        one_line(f"verification failed: {', '.join(c.name for c in report.failed)}")
        raise typer.Exit(1)
    if counts["unknown"]:
        err.print("compare the SHA-256 digests above with the ones the weights' publisher gives", highlight=False)
