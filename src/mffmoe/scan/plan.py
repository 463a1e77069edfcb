"""What to do with each input given what RESULTS already holds: the heart of resume and dedup."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyarrow as pa

from mffmoe.errors import ResultsMismatchError
from mffmoe.scan.schema import IDENTITY_COLUMNS, IDENTITY_DEFAULTS, ScanSettings
from mffmoe.scan.sources import HashedInput


class Action(StrEnum):
    SCAN = "scan"            # analyze it
    SKIP = "skip"            # RESULTS has this path with this content: nothing to do
    COPY = "copy"            # RESULTS has this content under another path: reuse that row
    DUPLICATE = "duplicate"  # same content as an input analyzed in this run: reuse its row when done
    UNREADABLE = "unreadable"  # could not even be read for hashing: an error row, no analysis


@dataclass(frozen=True)
class Decision:
    action: Action
    source: str | None = None   # COPY/DUPLICATE: the path whose analysis is reused


def check_identity(previous: pa.Table, settings: ScanSettings) -> None:
    """Refuse to mix rows of other weights or settings into RESULTS (it would silently mean two things)."""
    if previous.num_rows == 0:
        return
    want = settings.identity()
    found = {}
    for column in IDENTITY_COLUMNS:
        default = IDENTITY_DEFAULTS.get(column)
        values = {default if v is None else v for v in previous.column(column).unique().to_pylist()}
        if values != {want[column]}:
            found[column] = sorted(values, key=str)
    if found:
        details = "; ".join(f"{c}: stored {found[c]}, now {want[c]!r}" for c in found)
        raise ResultsMismatchError(f"the results were made with other weights or settings ({details}). "
                                   f"Scan into a new --out, or use the settings they were made with.")


class Planner:
    """Decides per input, in input order. Holds the stored rows as an Arrow table (compact even for
    millions of rows) and small indexes into it."""

    def __init__(self, previous: pa.Table, retry_errors: bool = False) -> None:
        self.previous = previous
        paths = previous.column("path").to_pylist()
        hashes = previous.column("content_hash").to_pylist()
        failed = previous.column("error_type").is_valid().to_pylist()
        self._done = {p: h for p, h, bad in zip(paths, hashes, failed, strict=True) if not (retry_errors and bad)}
        # Rows worth reusing for other paths with the same bytes: successful analyses only.
        self._by_hash: dict[str, int] = {}
        for i, (h, bad) in enumerate(zip(hashes, failed, strict=True)):
            if h is not None and not bad:
                self._by_hash.setdefault(h, i)
        self._leaders: dict[str, str] = {}  # content hash -> path analyzed in this run

    def decide(self, item: HashedInput) -> Decision:
        if item.path in self._done and self._done[item.path] == item.content_hash:
            return Decision(Action.SKIP)
        if item.content_hash is None:
            return Decision(Action.UNREADABLE)
        if item.content_hash in self._leaders:
            return Decision(Action.DUPLICATE, self._leaders[item.content_hash])
        if item.content_hash in self._by_hash:
            return Decision(Action.COPY, self.previous.column("path")[self._by_hash[item.content_hash]].as_py())
        self._leaders[item.content_hash] = item.path
        return Decision(Action.SCAN)

    def stored_row(self, content_hash: str) -> dict[str, Any]:
        return self.previous.slice(self._by_hash[content_hash], 1).to_pylist()[0]
