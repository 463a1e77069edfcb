"""Route dependencies as `Annotated` aliases (the layout of the FastAPI template's backend/app/api/deps.py).

`require_api_key` guards every router but the open pages: header `X-API-Key`, compared in constant
time; open when no key is configured. `ManagerDep` answers 503 until the model is loaded.
"""
from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from mffmoe.server.errors import ApiError
from mffmoe.server.jobs import JobManager
from mffmoe.server.metrics import Metrics
from mffmoe.server.settings import ServerSettings

API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="Required when the server was started with $MFFMOE_API_KEY set.")


def not_ready() -> ApiError:
    return ApiError(503, "not_ready", "the model is not loaded", headers={"Retry-After": "5"})


def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_manager(request: Request) -> JobManager:
    jobs: JobManager | None = getattr(request.app.state, "jobs", None)
    if jobs is None or not request.app.state.ready:
        raise not_ready()
    return jobs


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ManagerDep = Annotated[JobManager, Depends(get_manager)]
ApiKeyDep = Annotated[str | None, Security(api_key_header)]


def key_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of the raw header bytes (ASGI servers decode headers as latin-1)
    with the key's UTF-8 bytes, so a non-ASCII key works when the client sends it as UTF-8."""
    if given is None:
        return False
    try:
        raw = given.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), raw)


async def require_api_key(settings: SettingsDep, key: ApiKeyDep) -> None:
    if settings.api_key and not key_matches(settings.api_key, key):
        raise ApiError(401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header",
                       headers={"WWW-Authenticate": API_KEY_HEADER})
