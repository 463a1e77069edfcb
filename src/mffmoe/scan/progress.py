"""What a person watching a long scan sees: a progress bar (files/s, ETA, failures so far), periodic log
lines when stderr is not a terminal (batch jobs), and a summary at the end."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from mffmoe.config import env


@dataclass
class ScanSummary:
    """Counts of one run. `verdicts` and `failures` count the rows this run wrote."""

    inputs: int = 0
    skipped: int = 0       # already in RESULTS with the same content
    copied: int = 0        # same content already in RESULTS under another path: its row reused
    duplicates: int = 0    # same content as another input of this run: analyzed once
    analyzed: int = 0      # decoded and scored (failures included)
    unreadable: int = 0    # could not be read to hash
    out_of_scope: int = 0  # rows written with in_scope false (no face found, tiny input, ...: docs/trust.md)
    verdicts: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    scan_seconds: float = 0.0
    runner: str = ""
    out: str = ""

    @property
    def written(self) -> int:
        return sum(self.verdicts.values())

    @property
    def files_per_second(self) -> float:
        """Files analyzed per second of the analysis phase (hashing and planning excluded)."""
        return self.analyzed / self.scan_seconds if self.scan_seconds > 0 else 0.0

    def count(self, row: dict[str, Any]) -> None:
        if row["error_type"]:
            self.verdicts["ERROR"] += 1
            self.failures[row["error_type"]] += 1
        else:
            self.verdicts[row["prediction"]] += 1
            self.out_of_scope += int(row.get("in_scope") is False)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "skipped": self.skipped, "copied": self.copied,
                "duplicates": self.duplicates, "analyzed": self.analyzed, "unreadable": self.unreadable,
                "out_of_scope": self.out_of_scope, "written": self.written, "verdicts": dict(self.verdicts),
                "failures": dict(self.failures),
                "seconds": self.seconds, "scan_seconds": self.scan_seconds,
                "files_per_second": self.files_per_second, "runner": self.runner, "out": self.out}

    def print(self, console: Console) -> None:
        t = Table(title=f"scan summary: {self.out}", show_header=False, title_justify="left")
        t.add_row("inputs", str(self.inputs))
        t.add_row("already in results (skipped)", str(self.skipped))
        t.add_row("analyzed", f"{self.analyzed} in {self.scan_seconds:.1f} s ({self.files_per_second:.2f} files/s)")
        t.add_row("duplicates (analyzed once)", f"{self.duplicates} in this run, {self.copied} from earlier rows")
        verdicts = ", ".join(f"{k}: {self.verdicts[k]}" for k in ("REAL", "FAKE", "ERROR") if self.verdicts[k])
        t.add_row("rows written", f"{self.written}" + (f" ({verdicts})" if verdicts else ""))
        if self.out_of_scope:
            t.add_row("out of scope", f"{self.out_of_scope} (why: the scope_reasons column)")
        if self.failures:
            t.add_row("failures by type", ", ".join(f"{k}: {v}" for k, v in self.failures.most_common()))
        t.add_row("runner", self.runner)
        t.add_row("total time", f"{self.seconds:.1f} s")
        console.print(t)


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- files/s" if speed is None else f"{speed:.2f} files/s")


class ScanProgress:
    """Two phases: hashing every input (resume and dedup need it), then analyzing what is left."""

    def __init__(self, console: Console, enabled: bool | None = None, log_every: float = 30.0) -> None:
        if enabled is None:
            enabled = console.is_terminal or env().progress
        self.console = console
        self.enabled = enabled
        self.log_every = log_every
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                                  TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[failed]}"),
                                  console=console, disable=not enabled, transient=False)
        self._task: TaskID | None = None
        self._name = ""
        self._done = self._total = self._failed = 0
        self._start = self._last_log = time.monotonic()

    def __enter__(self) -> ScanProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def phase(self, name: str, total: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=self.enabled)
        self._name, self._done, self._total = name, 0, total
        self._start = self._last_log = time.monotonic()
        self._task = self._progress.add_task(name, total=total, failed="")

    def advance(self, n: int = 1, failed: int = 0) -> None:
        assert self._task is not None, "phase() starts a phase before it advances"
        self._done += n
        self._failed += failed
        self._progress.update(self._task, advance=n,
                              failed=f"[red]{self._failed} failed[/]" if self._failed else "")
        now = time.monotonic()
        if not self.enabled and now - self._last_log >= self.log_every:
            self._last_log = now
            rate = self._done / max(now - self._start, 1e-9)
            eta = (self._total - self._done) / rate if rate > 0 else float("inf")
            self.console.print(f"{self._name}: {self._done}/{self._total} files, {rate:.2f} files/s, "
                               f"ETA {eta / 60:.1f} min, {self._failed} failed", highlight=False)
