"""Analysis jobs: a bounded queue in front of a few inference threads, progress, cancellation.

`/analyze` and `/jobs` both go through here, so the queue bound holds for all work. An upload holds
only an upload place while its body arrives (a slow client cannot hold the queue); a request is
refused before it costs a byte when the queue is already full, takes its slot once the body is in,
and gives it back when the job ends. Disk use is bounded by (slots + upload places) x the upload limit.
Inference runs on worker threads; the event loop only waits (`Job.wait`).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import anyio

from mffmoe.errors import MFFMoEError
from mffmoe.inference.assemble import with_note
from mffmoe.inference.detector import Detector
from mffmoe.results import ImageAnalysisResult, VideoAnalysisResult
from mffmoe.server import reports, thumbnails
from mffmoe.server.errors import ApiError, from_mffmoe
from mffmoe.server.metrics import Metrics
from mffmoe.server.models import STAGE_EXPLAINING, STAGE_SCORING, ErrorDetail, JobRecord, JobStatus
from mffmoe.server.settings import ServerSettings
from mffmoe.server.store import JobStore
from mffmoe.server.uploads import Upload

log = logging.getLogger("mffmoe.server")


class JobCancelled(Exception):
    """Raised from the progress callback to stop a running video between batches."""


class Slot:
    """One reserved place in the queue; released exactly once."""

    def __init__(self, manager: JobManager) -> None:
        self._manager = manager
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._manager._release()


class Job:
    """A `JobRecord` (what is stored and served) plus what only this process has: the upload, the
    executor's future, the queue slot, the cancel flag and the error as raised.

    Worker threads change the job by swapping in a new record (`update`, `publish`), which wakes the
    event loop's waiters: one `asyncio.Event` per change, set through `call_soon_threadsafe`. Create a
    Job on the event loop that will wait on it.
    """

    def __init__(self, record: JobRecord, upload: Upload, *, persist: bool, media_type: str) -> None:
        self.record = record
        self.upload = upload
        self.persist = persist
        self.media_type = media_type
        self.error: ApiError | None = None  # re-raised as is by /analyze
        self.cancel_requested = threading.Event()
        self.future: Future[None] | None = None
        self.slot: Slot | None = None
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def is_final(self) -> bool:
        return self.record.is_final

    def update(self, **changes: Any) -> None:
        """Replace the record by a copy with `changes` (from any thread) and wake the waiters."""
        self.publish(self.record.model_copy(update=changes))

    def publish(self, record: JobRecord) -> None:
        """Make `record` the job's state (from any thread) and wake the waiters."""
        self.record = record
        with contextlib.suppress(RuntimeError):  # raised when the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, seen: JobRecord, timeout: float | None = None) -> bool:
        """Wait until the job's record is no longer `seen` (True) or `timeout` seconds pass (False).
        Records are immutable, so `seen` marks exactly what the caller has read: a change made in
        between, even while the caller was busy elsewhere, returns at once."""
        changed = self._changed
        if self.record is not seen:
            return True
        with anyio.move_on_after(timeout):
            await changed.wait()
            return True
        return False


class JobManager:
    def __init__(self, detector: Detector, settings: ServerSettings, store: JobStore, metrics: Metrics) -> None:
        self.detector = detector
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.workers = settings.workers
        self.capacity = settings.workers + settings.queue_size
        self._executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="mffmoe-infer")
        self._lock = threading.Lock()
        self._inflight = 0   # reserved slots: queued or running
        self._uploading = 0  # bodies being received (they hold no slot)
        self._running = 0
        self._closed = False
        self.active: dict[str, Job] = {}   # persisted jobs not yet final
        metrics.watch_queue(lambda: self.depth["depth"], lambda: self.depth["running"])

    # -- admission ---------------------------------------------------------------------------------
    def retry_after(self) -> int:
        """Seconds until a slot is likely free: mean processing time x rounds of work ahead, in [1, 300]."""
        mean = self.metrics.mean_processing
        with self._lock:
            rounds = math.ceil(max(1, self._inflight - self.workers + 1) / self.workers)
        return int(min(300, max(1, math.ceil((mean or 1.0) * rounds))))

    def _refused(self) -> ApiError:
        self.metrics.count_outcome("rejected")
        return ApiError(503, "queue_full", f"the queue is full ({self.settings.queue_size} waiting, "
                                           f"{self.workers} running); retry later",
                        headers={"Retry-After": str(self.retry_after())})

    @contextlib.contextmanager
    def uploading(self) -> Iterator[None]:
        """Hold an upload place while a body arrives. Refused at once (503) when the queue is already
        full or `max_uploads` bodies are arriving, so a refused request costs no upload."""
        limit = self.settings.max_uploads
        with self._lock:
            closed, full, busy = self._closed, self._inflight >= self.capacity, self._uploading >= limit
            if not (closed or full or busy):
                self._uploading += 1
        if closed:
            raise ApiError(503, "shutting_down", "the server is shutting down", headers={"Retry-After": "5"})
        if full:
            raise self._refused()
        if busy:
            self.metrics.count_outcome("rejected")
            raise ApiError(503, "too_many_uploads", f"{limit} uploads are already arriving; retry later",
                           headers={"Retry-After": "5"})
        try:
            yield
        finally:
            with self._lock:
                self._uploading -= 1

    def reserve(self) -> Slot:
        with self._lock:
            if self._closed:
                raise ApiError(503, "shutting_down", "the server is shutting down", headers={"Retry-After": "5"})
            if self._inflight < self.capacity:
                self._inflight += 1
                return Slot(self)
        raise self._refused()

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
            self.store.put(job.record)
        try:
            job.future = self._executor.submit(self._run, job)
        except RuntimeError:  # executor shut down between reserve() and here
            self._finish(job, JobStatus.failed, error=ApiError(503, "shutting_down", "the server is shutting down"))
            return job
        job.future.add_done_callback(functools.partial(self._on_future_done, job))
        return job

    def cancel(self, job: Job) -> None:
        """Stop `job`: dropped if still queued, stopped at its next batch if running a video."""
        job.cancel_requested.set()
        if job.future is not None:
            job.future.cancel()  # succeeds only while queued; _on_future_done finishes it

    def _on_future_done(self, job: Job, future: Future[None]) -> None:
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
        job.update(status=JobStatus.running, started=time.time(),
                   stage=STAGE_SCORING if job.record.explain is not None else None)
        self._store_started(job)

        def progress(done: int, total: int) -> None:
            if job.cancel_requested.is_set():
                raise JobCancelled()
            job.update(done=done, total=total)

        try:
            result = self.detector.analyze(job.upload.path, frames=job.record.frames, progress=progress,
                                          crop=job.record.crop)
            if job.record.explain is not None:
                result = self._explain(job, result)
            envelope = {"success": True, "model_used": self.detector.model_name,
                        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
                        "data": result.model_dump(mode="json")}
        except JobCancelled:
            self._finish_cancelled(job)
        except MFFMoEError as e:
            self._finish(job, JobStatus.failed, error=from_mffmoe(e, {str(job.upload.path): job.upload.filename}))
        except Exception as e:  # a bug, not bad input: logged with its traceback, reported as 500
            log.exception("job %s failed unexpectedly", job.id)
            self._finish(job, JobStatus.failed, error=ApiError(500, "internal_error", f"{type(e).__name__}: {e}"))
        else:
            if job.persist and isinstance(result, VideoAnalysisResult):  # for the web page's chart
                explained = [] if result.explanation is None else \
                    [it.frame_index for it in result.explanation.items if it.frame_index is not None]
                thumbnails.keep(thumbnails.folder(self.settings.db_path), job.id, job.upload.path,
                                job.record.frames or self.detector.frames, result, also=explained)
            if job.persist:  # built now: the report hashes the upload, which `_finish` removes
                reports.keep(thumbnails.folder(self.settings.db_path), job.id, job.upload.path,
                             job.upload.filename, result, self.detector)
            total = job.record.total
            if total is None or job.media_type == "image":
                total = total or 1
                job.update(done=total, total=total)
            self._finish(job, JobStatus.done, result=envelope, processing=result.processing_time)

    def _explain(self, job: Job, result: ImageAnalysisResult | VideoAnalysisResult,
                 ) -> ImageAnalysisResult | VideoAnalysisResult:
        """`result` with its explanation, made from the upload (still there: `_finish` removes it). The
        job shows stage `explaining` meanwhile, so it never looks finished before its maps are made. The
        score stands whatever happens: a failed explanation is said in the result's note."""
        from mffmoe.explain.explainer import explained  # torch and captum only when asked for

        options = job.record.explain
        assert options is not None
        if job.cancel_requested.is_set():
            raise JobCancelled()
        total = job.record.total or 1
        job.update(stage=STAGE_EXPLAINING, done=total, total=total)
        try:
            options = options.model_copy(update={"out_dir": None})  # the server writes no overlay files
            out = explained(self.detector, job.upload.path, result, options)
        except Exception as e:  # a bug in the explanation, not in the score: logged, said, the job stands
            log.exception("job %s: the explanation failed unexpectedly", job.id)
            why = f"no explanation: internal error ({type(e).__name__}: {e})"
            out = with_note(result, why)
        if job.cancel_requested.is_set():
            raise JobCancelled()
        job.update(stage=None)
        return out

    def _store_started(self, job: Job) -> None:
        """Persist the start, so a job interrupted by a crash keeps its `started`."""
        if job.persist:
            try:
                self.store.put(job.record)
            except Exception:  # the job still runs; its final state is stored (or logged) by _finish
                log.exception("could not store the start of job %s", job.id)

    def _finish(self, job: Job, status: JobStatus, *, error: ApiError | None = None,
                result: dict[str, Any] | None = None, processing: float | None = None) -> None:
        job.upload.remove()
        if job.record.status is JobStatus.running:
            with self._lock:
                self._running -= 1
        finished = time.time()
        record = job.record.model_copy(update=dict(
            status=status, stage=None, finished=finished, result=result,
            http_status=200 if error is None else error.status,
            error=None if error is None else ErrorDetail(error=error.kind, message=error.message)))
        if job.persist:
            try:
                self.store.put(record)
            except Exception:  # the result is still served from memory to whoever waits on it
                log.exception("could not store job %s", job.id)
            self.active.pop(job.id, None)  # from now on GET /jobs/{id} reads the store
        # Errors of /analyze requests are counted when answered; a stored job's only here.
        self.metrics.count_outcome(status.value, error_kind=error.kind if error is not None and job.persist else None,
                                   latency=(finished - record.created) if status is JobStatus.done else None,
                                   processing=processing)
        if job.slot is not None:
            job.slot.release()
        job.error = error
        job.publish(record)  # last: whoever waits on the job sees the counters and the queue settled

    def get(self, job_id: str) -> JobRecord | None:
        """The job's record, live or stored."""
        job = self.active.get(job_id)
        if job is not None:
            return job.record
        return self.store.get(job_id)

    def shutdown(self) -> None:
        """Refuse new work, then stop what is left: queued jobs are dropped and running videos stop at
        their next batch, both stored as failed/interrupted; a running image finishes. Waits for the
        worker threads."""
        with self._lock:
            self._closed = True
        for job in list(self.active.values()):
            self.cancel(job)
        self._executor.shutdown(wait=True, cancel_futures=True)
