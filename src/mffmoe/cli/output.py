"""What the commands print: the stderr console, one-line errors, the progress bar, result rows and tables.

Results go to stdout (or a file); everything else (progress, errors, summaries) goes to stderr, so
`mffmoe analyze ... -f json > out.json` stays valid JSON.
"""
from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

from mffmoe.cli.options import Format
from mffmoe.errors import ErrorInfo, MFFMoEError

if TYPE_CHECKING:
    from rich.progress import Progress

    from mffmoe.cli.checks import ReportFile
    from mffmoe.results import AnalysisResult

#: Messages, warnings and progress. Resolves sys.stderr at each write, so test runners capture it.
err = Console(stderr=True)


_LINE_BREAKS = re.compile(r"\s*\n\s*")


def _flat(text: str) -> str:
    """`text` as markup-safe text on one line (a message may hold a path with brackets or a line break)."""
    return escape(_LINE_BREAKS.sub(" ", text.strip()))


def one_line(text: str, style: str | None = "red") -> None:
    """Print `text` (plain, never markup) in `style` as exactly one stderr line: not wrapped at the
    console's width (80 columns when stderr is not a terminal), so that scripts can grep it."""
    err.print(f"[{style}]{_flat(text)}[/]" if style else _flat(text), soft_wrap=True, highlight=False)


def print_error(message: str) -> None:
    """The one `error: ...` line of an expected error."""
    err.print(f"[bold red]error:[/] {_flat(message)}", soft_wrap=True, highlight=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `message` as one error line; raise the result (`raise fail(...) from None`)."""
    print_error(message)
    return typer.Exit(code)


def progress(console: Console = err, *, info: bool = False) -> Progress:
    """The progress bar every command uses: shown when `console` is a terminal, or when MFFMOE_PROGRESS
    is set; transient. `info=True` adds a text column that tasks fill through their `info` field."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    from mffmoe.config import env

    columns: list[str | ProgressColumn] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                           TimeElapsedColumn(), TimeRemainingColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return RichProgress(*columns, console=console, transient=True,
                        disable=not console.is_terminal and not env().progress)


def number(value: Any, digits: int = 4) -> str:
    """A metric for a table: `-` when missing, floats rounded."""
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def result_row(path: str, result: AnalysisResult | MFFMoEError) -> dict[str, Any]:
    """One input's JSON row: the result's fields, or `error` as `ErrorInfo` (type, kind, message)."""
    if isinstance(result, MFFMoEError):
        return {"path": path, "error": ErrorInfo.of(result).to_dict()}
    return {"path": path, **result.model_dump(mode="json")}


def results_table(rows: list[dict[str, Any]], console: Console) -> None:
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold")
    calibrated = any(r.get("calibrated_score") is not None for r in rows)  # the column only when it has values
    columns = ["path", "type", "prediction", "confidence", "score", *(["calibrated"] if calibrated else []),
               "assessment", "spread", "frames", "time (s)", "note"]
    for col in columns:
        table.add_column(col, overflow="fold")
    for r in rows:
        if "error" in r:
            table.add_row(r["path"], "-", "[red]ERROR[/]", *[""] * (len(columns) - 4),
                          f"[red]{r['error']['type']}: {r['error']['message']}[/]")
            continue
        color = "red" if r["prediction"] == "FAKE" else "green"
        frames = ""
        if r["media_type"] == "video":
            frames = f"{r['frames_analyzed']}" + (f" ({r['frames_failed']} failed)" if r["frames_failed"] else "")
        assessment, spread = agreement_cells(r)
        cal = r.get("calibrated_score")
        cal_cell = [f"{cal:.4f}" if cal is not None else "-"] if calibrated else []
        table.add_row(r["path"], r["media_type"], f"[{color}]{r['prediction']}[/]", f"{r['confidence']:.3f}",
                      f"{r['score']:.4f}", *cal_cell, assessment, spread, frames, f"{r['processing_time']:.2f}",
                      note_cell(r))
    console.print(table)
    explanation_lines(rows, console)
    names = sorted({r["calibration"]["name"] for r in rows if r.get("calibration") and r.get("calibrated_score")
                    is not None})
    if names:
        console.print(f"calibrated by: {', '.join(names)} (score stays the spec's number)")


def note_cell(row: dict[str, Any]) -> str:
    """The note, with a provenance claim of AI generation beside it (the file's own metadata says so)."""
    p = row.get("provenance") or {}
    claim = f"[magenta]{p.get('summary')}[/]" if p.get("claims_ai") else ""
    return "; ".join(x for x in (claim, row.get("note") or "") if x)


def explanation_lines(rows: list[dict[str, Any]], console: Console) -> None:
    """Under the table, with --explain: each explained item's peak and overlay, then what a map is."""
    from mffmoe.results import WHAT_A_MAP_IS

    explained = [r for r in rows if r.get("explanation")]
    for r in explained:
        e = r["explanation"]
        for it in e["items"]:
            what = it["kind"] + ("" if it.get("face") is None else f" {it['face']}") + \
                ("" if it.get("frame_index") is None else f" of frame {it['frame_index']}")
            peak = "no evidence found" if it["peak"] is None else f"peak at x={it['peak'][0]}, y={it['peak'][1]}"
            overlay = f" -> {it['overlay']}" if it.get("overlay") else ""
            console.print(f"{r['path']}: {what}, P(fake) {it['score']:.3f}, {it['method']} map, {peak}{overlay}")
    if explained:
        console.print(WHAT_A_MAP_IS)


_ASSESSMENT_STYLE = {"likely_fake": "red", "likely_real": "green", "uncertain": "yellow"}


def agreement_cells(row: dict[str, Any]) -> tuple[str, str]:
    """The table's assessment cell (`out of scope` added when a scope reason applies) and spread cell
    (the experts' std, their range and the votes), from a result row."""
    a = row.get("agreement")
    scope = " [yellow](out of scope)[/]" if row.get("in_scope") is False else ""
    if not a:
        return scope.strip(), ""
    style = _ASSESSMENT_STYLE.get(a["assessment"], "")
    spread = (f"std {a['std']:.3f} [{a['min']:.2f}-{a['max']:.2f}] "
              f"{a['fake_votes']}/{a['fake_votes'] + a['real_votes']} fake")
    return f"[{style}]{a['assessment']}[/]{scope}", spread


def write_results(rows: list[dict[str, Any]], fmt: Format, output: ReportFile | None) -> None:
    """The report in `fmt`, to `output` (claimed before the analysis, see `checks.ReportFile`) or stdout."""
    if output is None:
        _write_report(rows, fmt, sys.stdout, Console(width=160))
        return
    with output.open() as f:
        _write_report(rows, fmt, f, Console(file=f, width=160))


def _write_report(rows: list[dict[str, Any]], fmt: Format, out: Any, console: Console) -> None:
    if fmt is Format.json:
        out.write(json.dumps(rows, indent=2) + "\n")
    elif fmt is Format.jsonl:
        out.writelines(json.dumps(r) + "\n" for r in rows)
    else:
        results_table(rows, console)


def failed_line(n_failed: int, n: int, what: str = "input(s)") -> None:
    """`N of M input(s) failed`, as one line."""
    one_line(f"{n_failed} of {n} {what} failed")
