"""HTTP errors in the shape the host's client parses: `{"detail": {"error": kind, "message": text}}`.

Every expected failure maps to a 4xx/503 here; a 500 only ever means a bug in this service.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mffmoe.errors import (
    CorruptMediaError,
    DecompressionBombError,
    EmptyMediaError,
    ErrorInfo,
    MediaError,
    MFFMoEError,
    UnsupportedMediaError,
    WeightsError,
)

log = logging.getLogger("mffmoe.server")

#: Most specific class first: the first isinstance match decides the status.
ERROR_STATUS: list[tuple[type[MFFMoEError], int]] = [
    (EmptyMediaError, 400),
    (UnsupportedMediaError, 415),
    (DecompressionBombError, 422),
    (CorruptMediaError, 422),
    (MediaError, 422),
    (WeightsError, 503),
]


class ApiError(Exception):
    """An error answered as-is: status, a short kind and a human message (plus optional headers)."""

    def __init__(self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, dict[str, str]]:
        return {"detail": {"error": self.kind, "message": self.message}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_mffmoe(error: MFFMoEError, replace: dict[str, str] | None = None) -> ApiError:
    """Map a typed library error (its `ErrorInfo`) to an ApiError; `replace` hides server paths (temp file ->
    client name)."""
    status = next((code for cls, code in ERROR_STATUS if isinstance(error, cls)), 422)
    info = ErrorInfo.of(error)
    message = info.message
    for old, new in (replace or {}).items():
        message = message.replace(old, new)
    return ApiError(status, info.kind, message)


_STATUS_KIND = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media",
                422: "invalid_request", 429: "too_many_requests", 503: "unavailable"}


def install_handlers(app: FastAPI) -> None:
    """Give every error response, Starlette's and FastAPI's own included, the host's shape."""

    def counted(request: Request, error: ApiError) -> JSONResponse:
        request.app.state.metrics.count_error(error.kind)
        return error.response()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return counted(request, exc)

    @app.exception_handler(MFFMoEError)
    async def _mffmoe_error(request: Request, exc: MFFMoEError) -> JSONResponse:
        return counted(request, from_mffmoe(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict) and "error" in exc.detail:
            detail = exc.detail
        else:
            detail = {"error": _STATUS_KIND.get(exc.status_code, "http_error"), "message": str(exc.detail)}
        return counted(request, ApiError(exc.status_code, detail["error"], detail.get("message", ""), exc.headers))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = ["{}: {}".format(".".join(str(x) for x in e.get("loc", ())), e.get("msg", "")) for e in exc.errors()]
        return counted(request, ApiError(422, "invalid_request", "; ".join(parts) or "invalid request"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return counted(request, ApiError(500, "internal_error", f"{type(exc).__name__}: {exc}"))
