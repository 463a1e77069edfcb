"""Job records in an embedded SQLite database, so finished results survive a restart.

One connection guarded by a lock (writes are few: one per state change); WAL so readers never wait
for a writer. Progress is kept in memory while a job runs and written with its final state.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    filename TEXT,
    size INTEGER,
    media_id TEXT,
    user_id TEXT,
    model TEXT,
    frames INTEGER,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER,
    result TEXT,
    error TEXT,
    http_status INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished);
"""
COLUMNS = ("id", "status", "created", "started", "finished", "filename", "size", "media_id", "user_id",
           "model", "frames", "done", "total", "result", "error", "http_status")
JSON_COLUMNS = ("result", "error")
UNFINISHED = ("queued", "running")


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

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, record: dict[str, Any]) -> None:
        """Insert or replace a whole record (keys from COLUMNS; result/error as Python objects)."""
        row = {c: record.get(c) for c in COLUMNS}
        for c in JSON_COLUMNS:
            if row[c] is not None:
                row[c] = json.dumps(row[c])
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO jobs ({', '.join(COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(COLUMNS))})", [row[c] for c in COLUMNS])

    def get(self, job_id: str) -> Optional[dict[str, Any]]:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        record = dict(row)
        for c in JSON_COLUMNS:
            if record[c] is not None:
                record[c] = json.loads(record[c])
        return record

    def fail_unfinished(self, message: str) -> int:
        """Mark jobs left queued/running by a previous process as failed; returns how many."""
        error = json.dumps({"error": "interrupted", "message": message})
        with self._lock:
            cur = self._db.execute(
                f"UPDATE jobs SET status = 'failed', finished = ?, error = ?, http_status = 503 "
                f"WHERE status IN ({', '.join('?' * len(UNFINISHED))})", (time.time(), error, *UNFINISHED))
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
