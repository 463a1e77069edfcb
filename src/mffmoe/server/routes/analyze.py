"""`POST /analyze`: the host's contract. One upload in, the result (or the host's error body) out."""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from mffmoe.server.admission import accept
from mffmoe.server.deps import ManagerDep, require_api_key
from mffmoe.server.errors import ApiError
from mffmoe.server.models import UPLOAD_FORM, AnalyzeResponse, error_responses

#: How often a waiting request checks that its client is still there.
DISCONNECT_POLL_S = 0.5

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/analyze", summary="Analyze one upload and wait for the result (the host's contract)",
             response_model=AnalyzeResponse, openapi_extra=UPLOAD_FORM,
             responses=error_responses(400, 401, 408, 413, 415, 422, 503))
async def analyze(request: Request, jobs: ManagerDep) -> JSONResponse:
    job = await accept(request, jobs, persist=False)
    checked = time.monotonic()
    record = job.record
    while not record.is_final:
        await job.wait(record, DISCONNECT_POLL_S)
        record = job.record
        if time.monotonic() - checked >= DISCONNECT_POLL_S and not record.is_final:
            checked = time.monotonic()
            if await request.is_disconnected():
                jobs.cancel(job)  # nobody will read the answer: free the worker
                raise ApiError(400, "client_disconnected", "the client went away")
    if job.error is not None:
        raise job.error
    return JSONResponse(record.result)
