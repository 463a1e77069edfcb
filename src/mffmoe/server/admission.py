"""Admission, shared by `POST /analyze` and `POST /jobs`: a queue slot first, then the upload.

The slot is reserved before a byte of the body is read, so a refused request costs no upload; the
form and the media type are checked before the job is queued, so a bad upload is answered at once.
"""
from __future__ import annotations

import re

import anyio
from starlette.requests import Request

from mffmoe.errors import MFFMoEError
from mffmoe.media.probe import probe_kind
from mffmoe.server.errors import ApiError, from_mffmoe
from mffmoe.server.jobs import Job, JobManager
from mffmoe.server.models import JobRecord
from mffmoe.server.uploads import Upload, receive_upload

#: Names a request may use for the served model, after `_normalise_model`.
MODEL_ALIASES = frozenset({"mffmoe", "mffmoev1"})


def _normalise_model(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def frames_field(value: str | None, limit: int) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        frames = int(value)
    except ValueError:
        raise ApiError(400, "invalid_request", f"frames must be an integer, got {value!r}") from None
    if not 1 <= frames <= limit:
        raise ApiError(400, "invalid_request", f"frames must be between 1 and {limit}, got {frames}")
    return frames


async def accept(request: Request, jobs: JobManager, *, persist: bool) -> Job:
    """Reserve a queue slot, stream the upload to disk, check the form and the media type, queue it."""
    settings = jobs.settings
    served = jobs.detector.model_name
    slot = jobs.reserve()
    upload: Upload | None = None
    try:
        upload = await receive_upload(request, max_bytes=settings.max_upload_bytes, upload_dir=settings.upload_dir)
        frames = frames_field(upload.fields.get("frames"), settings.max_frames)
        model = upload.fields.get("model") or served
        if _normalise_model(model) not in {_normalise_model(served), *MODEL_ALIASES}:
            raise ApiError(400, "unknown_model", f"model {model!r} is not served here; this server runs {served!r}")
        try:
            kind = await anyio.to_thread.run_sync(probe_kind, upload.path)
        except MFFMoEError as e:
            raise from_mffmoe(e, {str(upload.path): upload.filename}) from None
        record = JobRecord(filename=upload.filename, size=upload.size, frames=frames, model=served,
                           media_id=upload.fields.get("mediaId"), user_id=upload.fields.get("userId"),
                           total=1 if kind.value == "image" else None)
        job = Job(record, upload, persist=persist, media_type=kind.value)
    except BaseException:
        if upload is not None:
            upload.remove()
        slot.release()
        raise
    return jobs.submit(job, slot)
