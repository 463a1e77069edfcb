"""The service's data: `JobRecord`, the one declaration of a job's fields, and the response schemas.

A job's fields are declared once, on `JobRecord`. The SQLite table has one column per field
(server/store.py), and the API serves `JobRecord.view()`: the same fields with `id` as `job_id`,
times in ISO 8601 and `done`/`total` as `progress`. The OpenAPI document shows that view, because
the routes declare `response_model=JobRecord`.
"""
from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, computed_field
from pydantic.json_schema import GetJsonSchemaHandler, JsonSchemaValue
from pydantic_core import CoreSchema

from mffmoe.explain.base import DEFAULT_EXPLAIN_FRAMES, MAX_EXPLAIN_FRAMES, ExplainOptions
from mffmoe.results import WHAT_A_MAP_IS, ImageAnalysisResult, VideoAnalysisResult


class ErrorDetail(BaseModel):
    error: str = Field(description="short kind, e.g. unsupported_media, payload_too_large, queue_full")
    message: str


class ErrorBody(BaseModel):
    detail: ErrorDetail


class AnalyzeResponse(BaseModel):
    success: Literal[True] = True
    model_used: str
    timestamp: str = Field(description="ISO 8601, UTC")
    data: ImageAnalysisResult | VideoAnalysisResult = Field(discriminator="media_type")


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


FINAL = frozenset({JobStatus.done, JobStatus.failed, JobStatus.cancelled})


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


#: Seconds since the epoch: a number in the database, ISO 8601 (UTC) in the API.
Timestamp = Annotated[float, PlainSerializer(iso, return_type=str, when_used="json")]


class DocumentedAs:
    """Field metadata: validate and serve the value as it is, document it as `model` (a stored
    result is served byte for byte as it was produced, never re-parsed)."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(self.model.__pydantic_core_schema__)


#: `JobRecord.stage` values: the detector scores, then (when asked) the explanation is made.
STAGE_SCORING = "scoring"
STAGE_EXPLAINING = "explaining"


class JobProgress(BaseModel):
    done: int = Field(description="frames scored so far (1 for a finished image)")
    total: int | None = Field(default=None, description="frames to score; null until the video is opened")
    fraction: float | None = Field(default=None, description="done / total; null until the video is opened "
                                   "and while the explanation is made (the job's `stage` is explaining)")


class JobRecord(BaseModel):
    """One job, live or stored. Immutable: a running job's state changes by replacing its record, so a
    reader never sees half of an update."""

    # Every key is always in the view, so the schema marks even defaulted fields required.
    model_config = ConfigDict(frozen=True, protected_namespaces=(), json_schema_serialization_defaults_required=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, serialization_alias="job_id")
    status: JobStatus = JobStatus.queued
    created: Timestamp = Field(default_factory=time.time)
    started: Timestamp | None = None
    finished: Timestamp | None = None
    filename: str | None = None
    size: int | None = None
    media_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    frames: int | None = None
    crop: str | None = Field(default=None, description="the crop mode asked for: frame, faces or auto "
                             "(the result's `crop` says what was scored)")
    explain: ExplainOptions | None = Field(default=None, description="the explanation asked for (form field "
                                           "`explain`); null: none. The server never writes overlay files "
                                           "(`out_dir` is null): the maps are in the result")
    stage: str | None = Field(default=None, description="a running job that explains: `scoring`, then "
                              "`explaining` (it is not finished before its maps are made); null otherwise")
    done: int = Field(default=0, exclude=True)          # served as progress
    total: int | None = Field(default=None, exclude=True)
    result: Annotated[dict[str, Any], DocumentedAs(AnalyzeResponse)] | None = Field(
        default=None, description="when done: exactly what /analyze returns")
    error: ErrorDetail | None = Field(default=None, description="when failed or cancelled")
    http_status: int | None = Field(default=None, description="the status /analyze would have answered")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def progress(self) -> JobProgress:
        explaining = self.stage == STAGE_EXPLAINING
        return JobProgress(done=self.done, total=self.total,
                           fraction=(self.done / self.total) if self.total and not explaining else None)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def view(self) -> dict[str, Any]:
        """The API's view: what GET /jobs/{id} answers and each server-sent event carries."""
        return self.model_dump(mode="json", by_alias=True)


class JobAccepted(BaseModel):
    job_id: str
    status: str
    links: dict[str, str]


#: Values of the `crop` form field (the detector's crop modes).
CROP_MODES = ("frame", "faces", "auto")
#: Values of the `explain_method` form field.
EXPLAIN_METHODS = ("auto", "gradcam", "occlusion")

#: The multipart form shared by /analyze and /jobs (parsed by hand, so declared here for the docs).
UPLOAD_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["media"],
            "properties": {
                "media": {"type": "string", "format": "binary",
                          "description": "image or video; the type is judged by content"},
                "model": {"type": "string", "description": "model name; must name the served model"},
                "mediaId": {"type": "string"},
                "userId": {"type": "string"},
                "frames": {"type": "integer", "minimum": 1, "description": "frames sampled per video"},
                "crop": {"type": "string", "enum": list(CROP_MODES),
                         "description": "what is scored: `frame`, the whole frame (the spec's input); "
                                        "`faces`, each face found, cropped (the image's score is its "
                                        "highest face's, a video's comes from the persons followed; with no "
                                        "face the whole frame is scored and the result says `in_scope: "
                                        "false`); `auto`, the same as faces. Missing: the server's "
                                        "configured default (frame unless configured, so the host's "
                                        "clients get the numbers they stored). Any other value: 422 "
                                        "`unknown_crop`"},
                "explain": {"type": "boolean", "default": False,
                            "description": "true (also 1, yes, on): add an explanation to the result "
                                           "(`data.explanation`): small maps (32 x 32, values in [0, 1]) of "
                                           "where the experts look, for the image, each face scored, or a "
                                           "video's most suspicious sampled frames, each placed by its `box` "
                                           "in original pixels. " + WHAT_A_MAP_IS + " Missing or false: no "
                                           "explanation, the response is unchanged (`explanation` null). Any "
                                           "other value: 400 `invalid_request`. The score never changes; an "
                                           "explanation that cannot be made is said in `data.note` and the "
                                           "job still succeeds"},
                "explain_frames": {"type": "integer", "minimum": 1, "maximum": MAX_EXPLAIN_FRAMES,
                                   "default": DEFAULT_EXPLAIN_FRAMES,
                                   "description": "with explain, videos: how many of the most suspicious "
                                                  "sampled frames to explain; outside 1.."
                                                  f"{MAX_EXPLAIN_FRAMES}: 400 `invalid_request`"},
                "explain_experts": {"type": "boolean", "default": False,
                                    "description": "with explain: add each expert's own map"},
                "explain_method": {"type": "string", "enum": list(EXPLAIN_METHODS), "default": "auto",
                                   "description": "with explain: `gradcam` (Grad-CAM, about one ensemble "
                                                  "pass), `occlusion` (gradient-free, 26 passes) or `auto` "
                                                  "(Grad-CAM where captum is installed). Any other value: 422 "
                                                  "`unknown_explain_method`"},
            }}}},
    }
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "empty upload or bad form", 401: "missing or wrong X-API-Key", 404: "unknown job",
            408: "upload too slow (timeout, idle or rate limit)", 413: "upload over --max-upload-mb",
            409: "the job is not finished", 415: "not an image or a video",
            422: "undecodable media, or an unknown crop mode or explanation method",
            503: "queue full (see Retry-After)"}
    return {c: {"model": ErrorBody, "description": text.get(c, "")} for c in codes}
