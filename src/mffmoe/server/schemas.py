"""Response schemas for the OpenAPI document (the handlers return plain JSON of these shapes)."""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, Field

from mffmoe.results import ImageAnalysisResult, VideoAnalysisResult


class ErrorDetail(BaseModel):
    error: str = Field(description="short kind, e.g. unsupported_media, payload_too_large, queue_full")
    message: str


class ErrorBody(BaseModel):
    detail: ErrorDetail


class AnalyzeResponse(BaseModel):
    success: Literal[True] = True
    model_used: str
    timestamp: str = Field(description="ISO 8601, UTC")
    data: Union[ImageAnalysisResult, VideoAnalysisResult] = Field(discriminator="media_type")


class JobProgress(BaseModel):
    done: int = Field(description="frames scored so far (1 for a finished image)")
    total: Optional[int] = Field(None, description="frames to score; null until the video is opened")
    fraction: Optional[float] = None


class JobView(BaseModel):
    job_id: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    created: str
    started: Optional[str] = None
    finished: Optional[str] = None
    filename: Optional[str] = None
    size: Optional[int] = None
    media_id: Optional[str] = None
    user_id: Optional[str] = None
    model: Optional[str] = None
    frames: Optional[int] = None
    progress: JobProgress
    result: Optional[AnalyzeResponse] = Field(None, description="when done: exactly what /analyze returns")
    error: Optional[ErrorDetail] = Field(None, description="when failed or cancelled")
    http_status: Optional[int] = Field(None, description="the status /analyze would have answered")


class JobAccepted(BaseModel):
    job_id: str
    status: str
    links: dict[str, str]


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
            }}}},
    }
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "empty upload or bad form", 401: "missing or wrong X-API-Key", 404: "unknown job",
            413: "upload over --max-upload-mb", 415: "not an image or a video", 422: "undecodable media",
            503: "queue full (see Retry-After)"}
    return {c: {"model": ErrorBody, "description": text.get(c, "")} for c in codes}
