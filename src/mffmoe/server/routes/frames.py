"""`GET /jobs/{id}/frames/{frame_index}`: the thumbnail of one scored frame of a stored video job."""
from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from mffmoe.server import thumbnails
from mffmoe.server.deps import ManagerDep, require_api_key
from mffmoe.server.errors import ApiError
from mffmoe.server.models import error_responses

router = APIRouter(prefix="/jobs", dependencies=[Depends(require_api_key)])


@router.get("/{job_id}/frames/{frame_index}", summary="A small JPEG of one scored frame of a video job",
            response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}, "description": "at most 320 px on its longest side"},
                       **error_responses(401, 404)})
async def frame(job_id: str, frame_index: int, jobs: ManagerDep) -> FileResponse:
    if await anyio.to_thread.run_sync(jobs.get, job_id) is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    file = thumbnails.path(thumbnails.folder(jobs.settings.db_path), job_id, frame_index)
    if file is None:
        raise ApiError(404, "not_found", f"job {job_id!r} has no thumbnail of frame {frame_index}")
    return FileResponse(file, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
