"""Admission, shared by `POST /analyze` and `POST /jobs`: the upload, then a queue slot.

A request is refused before a byte of the body is read when the queue is already full; the body then
arrives under an upload place (not a slot, so slow clients cannot hold the queue) and the time and size
limits of `UploadLimits`; the form and the media type are checked, and only then a slot is taken and
the job queued. Every refusal goes out through `RequestBody.settle`, so the client gets to read it.
"""
from __future__ import annotations

import re

import anyio
from starlette.requests import Request

from mffmoe.errors import MFFMoEError
from mffmoe.explain.base import MAX_EXPLAIN_FRAMES, ExplainOptions
from mffmoe.media.probe import probe_kind
from mffmoe.server.errors import ApiError, from_mffmoe
from mffmoe.server.jobs import Job, JobManager
from mffmoe.server.models import CROP_MODES, EXPLAIN_METHODS, JobRecord
from mffmoe.server.uploads import RequestBody, receive_upload

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


def crop_field(value: str | None, default: str | None) -> str | None:
    """The `crop` form field: frame, faces or auto; missing or blank: `default` (the server's setting)."""
    if value is None or value.strip() == "":
        return default
    crop = value.strip().lower()
    if crop not in CROP_MODES:
        raise ApiError(422, "unknown_crop", f"crop must be one of {', '.join(CROP_MODES)}; got {value!r}")
    return crop


TRUE = frozenset({"true", "1", "yes", "on"})
FALSE = frozenset({"false", "0", "no", "off"})


def bool_field(name: str, value: str | None) -> bool | None:
    """A yes/no form field: true/1/yes/on or false/0/no/off (any case); missing or blank: None."""
    if value is None or value.strip() == "":
        return None
    word = value.strip().lower()
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise ApiError(400, "invalid_request", f"{name} must be true or false, got {value!r}")


def explain_fields(fields: dict[str, str]) -> ExplainOptions | None:
    """`explain`, `explain_frames`, `explain_experts`, `explain_method`: the explanation asked for, or
    None. The options are checked even without `explain`, so a mistyped one is never silently ignored."""
    explain = bool_field("explain", fields.get("explain"))
    experts = bool_field("explain_experts", fields.get("explain_experts"))
    frames = fields.get("explain_frames")
    count: int | None = None
    if frames is not None and frames.strip() != "":
        try:
            count = int(frames)
        except ValueError:
            raise ApiError(400, "invalid_request", f"explain_frames must be an integer, got {frames!r}") from None
        if not 1 <= count <= MAX_EXPLAIN_FRAMES:
            raise ApiError(400, "invalid_request",
                           f"explain_frames must be between 1 and {MAX_EXPLAIN_FRAMES}, got {count}")
    method = (fields.get("explain_method") or "").strip().lower() or "auto"
    if method not in EXPLAIN_METHODS:
        raise ApiError(422, "unknown_explain_method", f"explain_method must be one of {', '.join(EXPLAIN_METHODS)}; "
                                                      f"got {fields.get('explain_method')!r}")
    if not explain:
        return None
    options: dict[str, object] = {"method": method, "experts": bool(experts)}
    if count is not None:
        options["frames"] = count
    return ExplainOptions.model_validate(options)  # out_dir None: the server writes no overlay files


async def accept(request: Request, jobs: JobManager, *, persist: bool) -> Job:
    """Receive the upload (refused at once when the queue is full), check the form and the media type,
    take a queue slot and queue the job. Raises ApiError, answered after the body is settled."""
    body = RequestBody(request, jobs.settings.upload_limits)
    try:
        return await _accept(request, body, jobs, persist=persist)
    except ApiError as e:
        raise await body.settle(e) from None


async def _accept(request: Request, body: RequestBody, jobs: JobManager, *, persist: bool) -> Job:
    settings = jobs.settings
    served = jobs.detector.model_name
    with jobs.uploading():
        upload = await receive_upload(body, request.headers.get("content-type", ""), upload_dir=settings.upload_dir)
    try:
        frames = frames_field(upload.fields.get("frames"), settings.max_frames)
        explain = explain_fields(upload.fields)
        crop = crop_field(upload.fields.get("crop"), settings.detector.crop) or jobs.detector.crop
        model = upload.fields.get("model") or served
        if _normalise_model(model) not in {_normalise_model(served), *MODEL_ALIASES}:
            raise ApiError(400, "unknown_model", f"model {model!r} is not served here; this server runs {served!r}")
        try:
            kind = await anyio.to_thread.run_sync(probe_kind, upload.path)
        except MFFMoEError as e:
            raise from_mffmoe(e, {str(upload.path): upload.filename}) from None
        record = JobRecord(filename=upload.filename, size=upload.size, frames=frames, crop=crop, model=served,
                           explain=explain, media_id=upload.fields.get("mediaId"), user_id=upload.fields.get("userId"),
                           total=1 if kind.value == "image" else None)
        job = Job(record, upload, persist=persist, media_type=kind.value)
        slot = jobs.reserve()
    except BaseException:
        upload.remove()
        raise
    return jobs.submit(job, slot)
