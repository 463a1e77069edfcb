"""Job records in an embedded SQLite database, so finished results survive a restart.

The table is derived from `JobRecord`: one column per field, typed from its annotation, models and
dicts stored as JSON; a column added to JobRecord since a database was made is added to it on
opening. One connection guarded by a lock (writes are few: one per state change); WAL so
readers never wait for a writer. Progress is kept in memory while a job runs and written with its
final state.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import types
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mffmoe.errors import ConfigError
from mffmoe.server.models import ErrorDetail, JobRecord, JobStatus

UNFINISHED = (JobStatus.queued.value, JobStatus.running.value)


def _column(name: str, field: FieldInfo) -> tuple[str, bool]:
    """`name TYPE [NOT NULL]` for one JobRecord field, and whether it is stored as JSON."""
    kind, optional = field.annotation, False
    while True:
        origin = get_origin(kind)
        if origin is Annotated:
            kind = get_args(kind)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(kind) if a is not type(None)]
            optional = optional or len(args) < len(get_args(kind))
            (kind,) = args
        else:
            break
    base = get_origin(kind) or kind
    is_json = isinstance(base, type) and issubclass(base, (BaseModel, dict, list))
    if is_json or (isinstance(base, type) and issubclass(base, (str, Enum))):
        sql = "TEXT"
    elif base is int:
        sql = "INTEGER"
    elif base is float:
        sql = "REAL"
    else:
        raise TypeError(f"JobRecord.{name}: no SQLite column type for {field.annotation!r}")
    constraint = " PRIMARY KEY" if name == "id" else ("" if optional else " NOT NULL")
    return f"{name} {sql}{constraint}", is_json


_DEFS = {name: _column(name, field) for name, field in JobRecord.model_fields.items()}
COLUMNS = tuple(_DEFS)
JSON_COLUMNS = frozenset(name for name, (_, is_json) in _DEFS.items() if is_json)
SCHEMA = (f"CREATE TABLE IF NOT EXISTS jobs ({', '.join(sql for sql, _ in _DEFS.values())});\n"
          "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished);")


class JobStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """A database written before a field was added to JobRecord gets its column (NULL in old rows)."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, (sql, _) in _DEFS.items():
            if name not in have:
                if sql.endswith("NOT NULL"):
                    raise ConfigError(f"{self.path}: the job table lacks the required column {name!r}")
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {sql}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, record: JobRecord) -> None:
        """Insert or replace a whole record."""
        as_json = record.model_dump(mode="json", include=set(JSON_COLUMNS))
        row: list[Any] = []
        for c in COLUMNS:
            value = getattr(record, c)
            if c in JSON_COLUMNS:
                value = None if value is None else json.dumps(as_json[c])
            elif isinstance(value, Enum):
                value = value.value
            row.append(value)
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO jobs ({', '.join(COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(COLUMNS))})", row)

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        data = {c: (json.loads(v) if c in JSON_COLUMNS and v is not None else v) for c, v in dict(row).items()}
        return JobRecord.model_validate(data)

    def fail_unfinished(self, message: str) -> int:
        """Mark jobs left queued/running by a previous process as failed; returns how many."""
        error = ErrorDetail(error="interrupted", message=message).model_dump_json()
        with self._lock:
            cur = self._db.execute(
                f"UPDATE jobs SET status = ?, stage = NULL, finished = ?, error = ?, http_status = 503 "
                f"WHERE status IN ({', '.join('?' * len(UNFINISHED))})",
                (JobStatus.failed.value, time.time(), error, *UNFINISHED))
        return cur.rowcount

    def purge(self, older_than_s: float) -> int:
        """Delete finished jobs older than `older_than_s` seconds."""
        with self._lock:
            cur = self._db.execute("DELETE FROM jobs WHERE finished IS NOT NULL AND finished < ?",
                                   (time.time() - older_than_s,))
        return cur.rowcount

    def count(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {r[0]: r[1] for r in rows}
