"""Analysis jobs: a bounded queue in front of a few inference threads, progress, cancellation.

`/analyze` and `/jobs` both go through here, so the queue bound holds for all work. A slot is taken
before the upload is read (a request that would be refused is refused before it costs a byte, and
disk use is bounded by slots x the upload limit) and given back when the job ends.
Inference runs on worker threads; the event loop only waits on `Job.changed`.
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Optional

from mffmoe.detector import Detector
from mffmoe.errors import MFFMoEError
from mffmoe.server.errors import ApiError, from_mffmoe
from mffmoe.server.settings import ServerSettings
from mffmoe.server.stats import Stats
from mffmoe.server.store import JobStore
from mffmoe.server.uploads import Upload

log = logging.getLogger("mffmoe.server")


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


FINAL = (JobStatus.done, JobStatus.failed, JobStatus.cancelled)


class JobCancelled(Exception):
    """Raised from the progress callback to stop a running video between batches."""


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


class Slot:
    """One reserved place in the queue; released exactly once."""

    def __init__(self, manager: "JobManager") -> None:
        self._manager = manager
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._manager._release()


class Job:
    def __init__(self, upload: Upload, *, frames: int | None, model: str, media_id: str | None,
                 user_id: str | None, persist: bool, media_type: str) -> None:
        self.id = uuid.uuid4().hex
        self.upload = upload
        self.filename = upload.filename
        self.size = upload.size
        self.frames = frames
        self.model = model
        self.media_id = media_id
        self.user_id = user_id
        self.persist = persist
        self.media_type = media_type
        self.status = JobStatus.queued
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.done = 0
        self.total: int | None = 1 if media_type == "image" else None
        self.result: dict[str, Any] | None = None   # the /analyze envelope
        self.error: dict[str, str] | None = None    # {"error": kind, "message": text}
        self.http_status: int | None = None
        self.cancel_requested = threading.Event()
        self.future: Optional[Future] = None
        self.slot: Optional[Slot] = None
        self._lock = threading.Lock()
        self.version = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    # -- change notification (worker thread -> event loop) -----------------------------------------
    def notify(self) -> None:
        with self._lock:
            self.version += 1
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass

    async def changed(self, since: int, timeout: float) -> bool:
        """Wait until `version` differs from `since` (True) or `timeout` seconds pass (False)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.version != since:
                return True
            fut = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters = [w for w in self._waiters if w[1] is not fut]

    # -- views -------------------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status.value, "created": self.created, "started": self.started,
                "finished": self.finished, "filename": self.filename, "size": self.size,
                "media_id": self.media_id, "user_id": self.user_id, "model": self.model, "frames": self.frames,
                "done": self.done, "total": self.total, "result": self.result, "error": self.error,
                "http_status": self.http_status}


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def public_view(record: dict[str, Any]) -> dict[str, Any]:
    """The API's view of a job record (live or stored)."""
    done, total = record.get("done") or 0, record.get("total")
    return {
        "job_id": record["id"], "status": record["status"],
        "created": iso(record["created"]), "started": iso(record.get("started")),
        "finished": iso(record.get("finished")),
        "filename": record.get("filename"), "size": record.get("size"),
        "media_id": record.get("media_id"), "user_id": record.get("user_id"), "model": record.get("model"),
        "frames": record.get("frames"),
        "progress": {"done": done, "total": total, "fraction": (done / total) if total else None},
        "result": record.get("result"), "error": record.get("error"), "http_status": record.get("http_status"),
    }


class JobManager:
    def __init__(self, detector: Detector, settings: ServerSettings, store: JobStore, stats: Stats) -> None:
        self.detector = detector
        self.settings = settings
        self.store = store
        self.stats = stats
        self.workers = settings.workers
        self.capacity = settings.workers + settings.queue_size
        self._executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="mffmoe-infer")
        self._lock = threading.Lock()
        self._inflight = 0   # reserved slots: uploading, queued or running
        self._running = 0
        self._closed = False
        self.active: dict[str, Job] = {}   # persisted jobs not yet final

    # -- admission ---------------------------------------------------------------------------------
    def retry_after(self) -> int:
        """Seconds until a slot is likely free: mean processing time x rounds of work ahead, in [1, 300]."""
        mean = self.stats.mean_processing
        with self._lock:
            rounds = math.ceil(max(1, self._inflight - self.workers + 1) / self.workers)
        return int(min(300, max(1, math.ceil((mean or 1.0) * rounds))))

    def reserve(self) -> Slot:
        with self._lock:
            if self._closed:
                raise ApiError(503, "shutting_down", "the server is shutting down", headers={"Retry-After": "5"})
            if self._inflight < self.capacity:
                self._inflight += 1
                return Slot(self)
        self.stats.count_outcome("rejected")
        raise ApiError(503, "queue_full", f"the queue is full ({self.settings.queue_size} waiting, "
                                          f"{self.workers} running); retry later",
                       headers={"Retry-After": str(self.retry_after())})

    def _release(self) -> None:
        with self._lock:
            self._inflight -= 1

    @property
    def depth(self) -> dict[str, int]:
        with self._lock:
            return {"depth": self._inflight - self._running, "running": self._running,
                    "capacity": self.capacity, "queue_size": self.settings.queue_size, "workers": self.workers}

    # -- lifecycle ---------------------------------------------------------------------------------
    def submit(self, job: Job, slot: Slot) -> Job:
        """Queue `job`; it now owns `slot` and its upload (both released when it ends)."""
        job.slot = slot
        if job.persist:  # in `active` first: a stored unfinished record always has a live job
            self.active[job.id] = job
            self.store.put(job.record())
        try:
            job.future = self._executor.submit(self._run, job)
        except RuntimeError:  # executor shut down between reserve() and here
            self._finish(job, JobStatus.failed, error=ApiError(503, "shutting_down", "the server is shutting down"))
            return job
        job.future.add_done_callback(lambda f, job=job: self._on_future_done(job, f))
        return job

    def cancel(self, job: Job) -> None:
        """Stop `job`: dropped if still queued, stopped at its next batch if running a video."""
        job.cancel_requested.set()
        if job.future is not None:
            job.future.cancel()  # succeeds only while queued; _on_future_done finishes it

    def _on_future_done(self, job: Job, future: Future) -> None:
        if future.cancelled() and not job.is_final:
            self._finish_cancelled(job)

    def _finish_cancelled(self, job: Job) -> None:
        if self._closed:  # stopped by shutdown, not by a client: the same outcome as a crash
            self._finish(job, JobStatus.failed,
                         error=ApiError(503, "interrupted", "the server shut down before the job finished"))
        else:
            self._finish(job, JobStatus.cancelled, error=ApiError(409, "cancelled", "the job was cancelled"))

    def _run(self, job: Job) -> None:
        if job.cancel_requested.is_set():
            self._finish_cancelled(job)
            return
        with self._lock:
            self._running += 1
        job.status, job.started = JobStatus.running, time.time()
        job.notify()

        def progress(done: int, total: int) -> None:
            if job.cancel_requested.is_set():
                raise JobCancelled()
            job.done, job.total = done, total
            job.notify()

        try:
            result = self.detector.analyze(job.upload.path, frames=job.frames, progress=progress)
            envelope = {"success": True, "model_used": self.detector.model_name,
                        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                        "data": result.model_dump(mode="json")}
        except JobCancelled:
            self._finish_cancelled(job)
        except MFFMoEError as e:
            self._finish(job, JobStatus.failed, error=from_mffmoe(e, {str(job.upload.path): job.filename}))
        except Exception as e:  # a bug, not bad input: logged with its traceback, reported as 500
            log.exception("job %s failed unexpectedly", job.id)
            self._finish(job, JobStatus.failed, error=ApiError(500, "internal_error", f"{type(e).__name__}: {e}"))
        else:
            if job.total is None or job.media_type == "image":
                job.done = job.total = job.total or 1
            job.result = envelope
            self._finish(job, JobStatus.done, processing=result.processing_time)

    def _finish(self, job: Job, status: JobStatus, *, error: ApiError | None = None,
                processing: float | None = None) -> None:
        job.upload.remove()
        if job.status is JobStatus.running:
            with self._lock:
                self._running -= 1
        job.status, job.finished = status, time.time()
        if error is not None:
            job.error, job.http_status = error.body()["detail"], error.status
        else:
            job.http_status = 200
        if job.persist:
            try:
                self.store.put(job.record())
            except Exception:  # the result is still served from memory to whoever waits on it
                log.exception("could not store job %s", job.id)
            self.active.pop(job.id, None)
        # Errors of /analyze requests are counted when answered; a stored job's only here.
        self.stats.count_outcome(status.value, error_kind=job.error["error"] if job.error and job.persist else None,
                                 latency=(job.finished - job.created) if status is JobStatus.done else None,
                                 processing=processing)
        if job.slot is not None:
            job.slot.release()
        job.notify()

    def get(self, job_id: str) -> dict[str, Any] | None:
        job = self.active.get(job_id)
        if job is not None:
            return public_view(job.record())
        record = self.store.get(job_id)
        return public_view(record) if record else None

    def shutdown(self) -> None:
        """Refuse new work, drop queued jobs, stop running videos at their next batch, wait for the rest."""
        with self._lock:
            self._closed = True
        for job in list(self.active.values()):
            self.cancel(job)
        self._executor.shutdown(wait=True, cancel_futures=True)
