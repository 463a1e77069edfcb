"""RESULTS on disk: Parquet (one file, or a directory of parts) or JSONL, written so a killed scan
loses at most the files in flight.

Every finished row is appended to a journal (one JSON line, flushed to the OS at once) before it counts
as done. Parquet stores also batch rows into immutable parts (`part-<run>-<seq>.parquet`, written to a
temporary name and renamed); a part replaces its journal. Opening a store turns journals left by a killed
scan into parts. Names sort in time order, and when a path has several rows the last one wins; closing a
store compacts superseded rows away (and, for a single `.parquet` file, folds the parts into it).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from mffmoe._util.fs import atomic_write
from mffmoe.errors import ResultsLockedError, ScanError
from mffmoe.scan.schema import SCHEMA


def _run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time_ns() % 1_000_000_000:09d}-{os.getpid()}"


def _to_json(row: dict[str, Any]) -> str:
    return json.dumps({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()})


def _from_json(line: str) -> dict[str, Any]:
    row = json.loads(line)
    if isinstance(row.get("scanned_at"), str):
        row["scanned_at"] = datetime.fromisoformat(row["scanned_at"])
    return row


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a last line cut short by a kill is ignored (it was never acknowledged)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            if line.strip():
                rows.append(_from_json(line))
    return rows


def table_of(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def latest(table: pa.Table) -> pa.Table:
    """One row per path, the last one written, sorted by path."""
    if table.num_rows == 0:
        return table
    table = table.append_column("_order", pa.array(range(table.num_rows), pa.int64()))
    last = table.group_by("path").aggregate([("_order", "max")]).column("_order_max")
    return table.take(last).drop_columns(["_order"]).sort_by("path")


def _write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_write(path, "wb") as f:
        pq.write_table(table, f, compression="zstd")


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path, schema=SCHEMA)
    except (pa.ArrowInvalid, OSError) as e:
        raise ScanError(f"{path}: not a readable scan results file ({e})") from e


class ResultStore(ABC):
    """Durable, append-only rows with resume. Use as a context manager (it holds a lock on RESULTS)."""

    def __init__(self, out: str | os.PathLike[str], flush_rows: int = 1000, flush_seconds: float = 30.0) -> None:
        self.out = Path(out)
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.run_id = _run_id()
        self.written = 0
        self._lock_file: TextIO | None = None

    @abstractmethod
    def check_path(self) -> None:
        """Refuse a RESULTS path of the wrong kind (a file where a folder is meant, or the reverse): cheap,
        so a scan checks it before it loads a model."""

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> ResultStore:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = lock = open(self.out.parent / f".{self.out.name}.lock", "a")  # noqa: SIM115  (held)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ResultsLockedError(f"{self.out}: another scan is writing these results") from None
        try:
            self.recover()
        except BaseException:
            lock.close()  # the lock goes with the failed opening
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            # Compacting takes a while on big stores: after an interruption, only make rows durable.
            self.close(compact=exc_type is None)
        finally:
            if self._lock_file is not None:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()

    # -- interface -------------------------------------------------------------------------------
    @property
    @abstractmethod
    def paths(self) -> list[Path]:
        """Files and folders this store owns (kept out of the scan's inputs)."""

    def recover(self) -> None:  # noqa: B027  (optional hook)
        """Make leftovers of an interrupted scan part of the store."""

    @abstractmethod
    def load(self) -> pa.Table:
        """Every stored row, latest per path, sorted by path."""

    @abstractmethod
    def append(self, row: dict[str, Any]) -> None:
        """Record one finished row durably (it survives a kill of this process once this returns)."""

    @abstractmethod
    def close(self, compact: bool = True) -> None: ...


class ParquetStore(ResultStore):
    """`out.parquet`: one file, with parts staged in `out.parquet.parts/` while a scan runs.
    Any other name: a directory of parts, left as parts (compacted only when rows were superseded)."""

    def __init__(self, out: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(out, **kwargs)
        self.single = self.out.suffix.lower() == ".parquet"
        self.parts_dir = self.out.with_name(self.out.name + ".parts") if self.single else self.out
        self._buffer: list[dict[str, Any]] = []
        self._seq = 0
        self._journal: TextIO | None = None
        self._journal_path: Path | None = None
        self._last_flush = time.monotonic()

    @property
    def paths(self) -> list[Path]:
        return [self.out, self.parts_dir]

    def _parts(self) -> list[Path]:
        return sorted(self.parts_dir.glob("part-*.parquet")) if self.parts_dir.is_dir() else []

    def check_path(self) -> None:
        if self.single and self.out.is_dir():
            raise ScanError(f"{self.out}: is a directory; name the results without .parquet for a parts directory")
        if not self.single and self.out.is_file():
            raise ScanError(f"{self.out}: is a file; name it *.parquet for a single-file results store")

    def recover(self) -> None:
        self.check_path()
        if not self.parts_dir.is_dir():
            return
        for journal in sorted(self.parts_dir.glob("journal-*.jsonl")):
            rows = read_jsonl(journal)
            if rows:  # journal-<run>-<seq>.jsonl -> part-<run>-<seq>.parquet: same place in time order
                part = "part-" + journal.name.removeprefix("journal-").removesuffix(".jsonl") + ".parquet"
                _write_parquet(table_of(rows), journal.with_name(part))
            journal.unlink()
        for tmp in self.parts_dir.glob(".*.tmp"):
            tmp.unlink()

    def _tables(self) -> list[pa.Table]:
        tables = [_read_parquet(self.out)] if self.single and self.out.is_file() else []
        return tables + [_read_parquet(p) for p in self._parts()]

    def load(self) -> pa.Table:
        tables = self._tables()
        return latest(pa.concat_tables(tables)) if tables else SCHEMA.empty_table()

    def append(self, row: dict[str, Any]) -> None:
        if self._journal is None:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
            self._journal_path = self.parts_dir / f"journal-{self.run_id}-{self._seq:06d}.jsonl"
            self._journal = open(self._journal_path, "a", encoding="utf-8")  # noqa: SIM115  (closed by flush)
        journal = self._journal
        journal.write(_to_json(row) + "\n")
        journal.flush()
        self._buffer.append(row)
        self.written += 1
        if len(self._buffer) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        _write_parquet(table_of(self._buffer), self.parts_dir / f"part-{self.run_id}-{self._seq:06d}.parquet")
        self._buffer.clear()
        assert self._journal is not None and self._journal_path is not None  # rows were journaled first
        self._journal.close()
        self._journal_path.unlink()
        self._journal = self._journal_path = None
        self._seq += 1

    def close(self, compact: bool = True) -> None:
        self.flush()
        if not compact:
            return
        parts = self._parts()
        if self.single:
            if parts:
                _write_parquet(self.load(), self.out)
                shutil.rmtree(self.parts_dir)
            elif self.parts_dir.is_dir() and not any(self.parts_dir.iterdir()):
                self.parts_dir.rmdir()
            return
        if len(parts) > 1:
            tables = self._tables()
            total = sum(t.num_rows for t in tables)
            merged = latest(pa.concat_tables(tables))
            if merged.num_rows < total:  # superseded rows: rewrite as one part, then drop the old ones
                _write_parquet(merged, self.parts_dir / f"part-{_run_id()}-compacted.parquet")
                for p in parts:
                    p.unlink()


class JsonlStore(ResultStore):
    """One JSON object per line, appended and flushed per row: simple and durable, for small jobs."""

    def __init__(self, out: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(out, **kwargs)
        self._file: TextIO | None = None

    @property
    def paths(self) -> list[Path]:
        return [self.out]

    def check_path(self) -> None:
        if self.out.is_dir():
            raise ScanError(f"{self.out}: is a directory; JSONL results are one file (name a directory without "
                            f".jsonl for Parquet parts)")

    def recover(self) -> None:
        self.check_path()
        if not self.out.is_file():
            return
        with open(self.out, "rb+") as f:  # drop a last line cut short by a kill
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def load(self) -> pa.Table:
        if not self.out.is_file():
            return SCHEMA.empty_table()
        try:
            return latest(table_of(read_jsonl(self.out)))
        except (ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ScanError(f"{self.out}: not a readable scan results file ({e})") from e

    def append(self, row: dict[str, Any]) -> None:
        if self._file is None:
            self._file = open(self.out, "a", encoding="utf-8")  # noqa: SIM115  (closed by close)
        file = self._file
        file.write(_to_json(row) + "\n")
        file.flush()
        self.written += 1

    def close(self, compact: bool = True) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if compact and self.out.is_file():
            rows = read_jsonl(self.out)
            merged = latest(table_of(rows)).to_pylist()
            if [r["path"] for r in merged] != [r["path"] for r in rows]:  # superseded or unsorted rows
                with atomic_write(self.out, "w", encoding="utf-8") as f:
                    f.write("".join(_to_json(r) + "\n" for r in merged))


#: Store formats by name; "auto" picks by the name of RESULTS.
STORES: dict[str, Callable[..., ResultStore]] = {"parquet": ParquetStore, "jsonl": JsonlStore}


def store_format(out: str | os.PathLike[str], fmt: str = "auto") -> str:
    if fmt != "auto":
        if fmt not in STORES:
            raise ScanError(f"unknown results format {fmt!r}; choose from {sorted(STORES)} or auto")
        return fmt
    return "jsonl" if Path(out).suffix.lower() in (".jsonl", ".ndjson") else "parquet"


def open_store(out: str | os.PathLike[str], fmt: str = "auto", **kwargs: Any) -> ResultStore:
    return STORES[store_format(out, fmt)](out, **kwargs)


def read_results(out: str | os.PathLike[str], fmt: str = "auto") -> pa.Table:
    """RESULTS as one table (latest row per path, sorted by path), including rows of a scan in progress
    or killed (its journal). Does not take the lock and changes nothing on disk."""
    store = open_store(out, fmt)
    if isinstance(store, ParquetStore):
        tables = store._tables() if store.out.exists() or store.parts_dir.exists() else []
        journals = sorted(store.parts_dir.glob("journal-*.jsonl")) if store.parts_dir.is_dir() else []
        tables += [table_of(read_jsonl(j)) for j in journals]
        return latest(pa.concat_tables(tables)) if tables else SCHEMA.empty_table()
    return store.load()
