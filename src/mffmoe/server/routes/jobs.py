"""`/jobs`: queued analyses with an id, progress (polled or as server-sent events) and cancellation."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from mffmoe.errors import MFFMoEError
from mffmoe.server.admission import accept
from mffmoe.server.deps import ManagerDep, require_api_key
from mffmoe.server.errors import ApiError, from_mffmoe
from mffmoe.server.jobs import Job, JobManager
from mffmoe.server.models import FINAL, UPLOAD_FORM, JobAccepted, JobRecord, JobStatus, error_responses

#: Comment lines on an idle event stream, so proxies keep the connection open.
SSE_PING_S = 15
#: Line ends of the event stream, as before sse-starlette (whose default is CRLF); the page splits on LF.
SSE_SEP = "\n"
#: How long DELETE waits for a running job to acknowledge the cancellation before answering.
CANCEL_WAIT_S = 0.2

router = APIRouter(prefix="/jobs", dependencies=[Depends(require_api_key)])


def _find(jobs: JobManager, job_id: str) -> JobRecord:
    record = jobs.get(job_id)
    if record is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return record


@router.post("", status_code=202, summary="Queue an analysis; returns a job id at once",
             response_model=JobAccepted, openapi_extra=UPLOAD_FORM,
             responses=error_responses(400, 401, 408, 413, 415, 422, 503))
async def create_job(request: Request, jobs: ManagerDep) -> JSONResponse:
    job = await accept(request, jobs, persist=True)
    links = {"self": f"/jobs/{job.id}", "events": f"/jobs/{job.id}/events"}
    return JSONResponse({"job_id": job.id, "status": job.record.status.value, "links": links}, status_code=202,
                        headers={"Location": links["self"]})


@router.get("/{job_id}", response_model=JobRecord, summary="Status, progress and (when done) the result",
            responses=error_responses(401, 404))
async def get_job(job_id: str, jobs: ManagerDep) -> JSONResponse:
    return JSONResponse((await anyio.to_thread.run_sync(_find, jobs, job_id)).view())


@router.get("/{job_id}/report", summary="The finished job's evidence report: json (the signed layout), html "
            "(self-contained) or pdf", responses=error_responses(401, 404, 409, 422, 503))
async def get_report(job_id: str, jobs: ManagerDep, format: str = "html") -> Response:  # noqa: A002
    from mffmoe.report.render import CONTENT_TYPES, render_as
    from mffmoe.server import reports, thumbnails

    if format not in CONTENT_TYPES:
        raise ApiError(422, "unknown_format", f"format must be one of {', '.join(CONTENT_TYPES)}; got {format!r}")
    record = await anyio.to_thread.run_sync(_find, jobs, job_id)
    if record.status is not JobStatus.done:
        raise ApiError(409, "not_finished", f"job {job_id} is {record.status.value}: only a finished job has a report")
    root = thumbnails.folder(jobs.settings.db_path)
    report = await anyio.to_thread.run_sync(reports.load, root, job_id)
    if report is None:
        raise ApiError(404, "no_report", f"job {job_id} has no stored report (jobs of POST /analyze are not kept)")
    try:
        page = None if format == "json" else await anyio.to_thread.run_sync(reports.page, root, job_id)
        body = await anyio.to_thread.run_sync(lambda: render_as(report, format, page=page))
    except MFFMoEError as e:
        raise from_mffmoe(e, {}) from None
    stem = Path(str(report["input"].get("name") or job_id)).stem
    return Response(body, media_type=CONTENT_TYPES[format],
                    headers={"Content-Disposition": f'attachment; filename="{stem}.report.{format}"'})


@router.delete("/{job_id}", response_model=JobRecord, summary="Cancel a queued or running job",
               responses=error_responses(401, 404))
async def cancel_job(job_id: str, jobs: ManagerDep) -> JSONResponse:
    job = jobs.active.get(job_id)
    if job is not None:
        seen = job.record
        jobs.cancel(job)
        if not seen.is_final:
            await job.wait(seen, CANCEL_WAIT_S)
    return JSONResponse((await anyio.to_thread.run_sync(_find, jobs, job_id)).view())


@router.get("/{job_id}/events", summary="Progress as server-sent events",
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "events `status`, `progress` (also when the stage changes "
                                            "from scoring to explaining), then one of `done`, `failed`, "
                                            "`cancelled`; each `data` is the job as GET /jobs/{id} gives it"},
                       **error_responses(401, 404)})
async def job_events(job_id: str, jobs: ManagerDep) -> EventSourceResponse:
    live = jobs.active.get(job_id)  # taken first: it may finish (and leave) meanwhile
    first = live.record if live else await anyio.to_thread.run_sync(_find, jobs, job_id)
    # sse-starlette sends the pings and stops the generator when the client disconnects.
    return EventSourceResponse(_events(first, live), ping=SSE_PING_S, sep=SSE_SEP)


async def _events(first: JobRecord, job: Job | None) -> AsyncIterator[ServerSentEvent]:
    """`status` now, `progress` on every change, then the final state; ends itself."""
    if job is None or first.is_final:  # already final (or stored by an earlier run)
        yield _event(first.status.value, first)
        return
    yield _event("status", first)
    last = first
    while True:
        record = job.record
        if record.status in FINAL:
            yield _event(record.status.value, record)
            return
        if record.status != last.status:
            yield _event("status", record)
        elif record.done != last.done or record.stage != last.stage:
            yield _event("progress", record)
        last = record
        await job.wait(record)


def _event(name: str, record: JobRecord) -> ServerSentEvent:
    return ServerSentEvent(event=name, data=record.model_dump_json(by_alias=True), sep=SSE_SEP)
