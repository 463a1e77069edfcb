"""Service info, pages, readiness, the served model and the counters (`/stats` and `/metrics`).

`public` holds what a browser or a load balancer needs without a key (and no data); `router` the rest.
"""
from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from mffmoe import __version__
from mffmoe.inference.detector import Detector
from mffmoe.server import hostinfo
from mffmoe.server.deps import ManagerDep, MetricsDep, SettingsDep, not_ready, require_api_key

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
log = logging.getLogger("mffmoe.server")

public = APIRouter()
router = APIRouter(dependencies=[Depends(require_api_key)])


def model_info(detector: Detector) -> dict[str, Any]:
    info = detector.info
    return {"name": detector.model_name, "roster": list(detector.engine.roster),
            "experts": len(detector.engine.roster), "input_size": detector.input_size,
            "engine": detector.engine.name, "device": detector.engine.device, "threshold": detector.threshold,
            "frames": detector.frames, "pooling": detector.pooling, "untrained": detector.random_weights,
            "ema": info.ema, "layout": info.layout, "source": info.source}


#: What `/health` shows while the checks run (they read every tensor: seconds on the full weights).
CHECKING: dict[str, Any] = {"ok": None, "checking": True, "checks": []}
#: Weights at least this large are checked in a child process (the full roster: 1.5 GB of files).
CHILD_CHECK_BYTES = 256 * 2**20


def weights_checks(detector: Detector) -> dict[str, Any]:
    """The structural checks of the served weights (`mffmoe.model.verify`; no hashes, no golden files: they
    are `mffmoe verify`'s), as `/health` shows them: `{"ok": bool, "checks": [{name, group, status, detail}]}`.
    Run once, after start-up; for large weights in a child process: reading every tensor of the full
    weights takes seconds and about 1.3 GB of pages, which must not stay in the server's memory. A failure
    is logged and shown, and the server keeps serving."""
    from mffmoe.model.check import Check  # verify.py itself needs torch: the checks run in a child

    try:
        info = detector.info
        if detector.random_weights or info.layout == "untrained":
            checks = [Check(name="weights", group="structure", status="skipped",
                            detail="random weights (untrained)")]
        elif sum(_size(p) for p in info.files.values()) < CHILD_CHECK_BYTES:  # small: not worth a process
            checks = _structural_checks(info.source, not info.ema)
        else:
            context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of the server's
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as child:
                checks = child.submit(_structural_checks, info.source, not info.ema).result()
    except Exception as e:  # the checks must not stop the server: their failure is a failed check
        checks = [Check(name="weights", group="structure", status="fail",
                        detail=f"the checks could not run: {type(e).__name__}: {e}")]
    failed = [c for c in checks if c.status == "fail"]
    for c in failed:
        log.error("weights check failed: %s: %s", c.name, c.detail)
    return {"ok": not failed, "checks": [c.model_dump(mode="json") for c in checks]}


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def _structural_checks(source: str, allow_missing_ema: bool) -> list[Any]:
    from mffmoe.model.verify import structural_checks

    return structural_checks(source, allow_missing_ema=allow_missing_ema)


# -- open -----------------------------------------------------------------------------------------
@public.get("/", summary="Service info (a link page for browsers)")
async def root(request: Request, settings: SettingsDep) -> Any:
    if "text/html" in request.headers.get("accept", ""):
        return FileResponse(STATIC_DIR / "home.html")
    detector: Detector | None = request.app.state.detector
    return {"service": "mffmoe", "version": __version__, "model": detector.model_name if detector else None,
            "ui": "/ui", "docs": "/docs", "openapi": "/openapi.json", "auth": bool(settings.api_key)}


@public.get("/ping", summary="Liveness; answers 200 only once the model is loaded")
async def ping(request: Request) -> Any:
    if not request.app.state.ready:
        raise not_ready()
    return {"status": "ok"}


@public.get("/ui", include_in_schema=False)
async def ui() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")


@public.get("/docs", include_in_schema=False)
async def docs() -> FileResponse:
    # A static page: it fetches /openapi.json with the key the person entered on /ui or here.
    return FileResponse(STATIC_DIR / "docs.html")


# -- keyed ----------------------------------------------------------------------------------------
@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/health", summary="Readiness: model loaded, engine, device, the weights' structural checks")
async def health(request: Request) -> Any:
    # 200 once ready, even when a weights check failed (the server serves; `status` says "degraded" and
    # `weights.ok` is false); 503 only while loading.
    det: Detector | None = request.app.state.detector
    ready = bool(request.app.state.ready and det is not None)
    weights: dict[str, Any] | None = getattr(request.app.state, "weights", None)
    status = "loading" if not ready else "degraded" if weights is not None and weights["ok"] is False else "ok"
    body = {"status": status, "ready": ready,
            **({"model": det.model_name, "engine": det.engine.name, "device": det.engine.device,
                "untrained": det.random_weights} if det is not None else {}),
            **({"weights": weights} if weights is not None else {})}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/models", summary="The served model")
async def models(jobs: ManagerDep) -> Any:
    return {"default": jobs.detector.model_name, "models": [model_info(jobs.detector)]}


@router.get("/stats", summary="The host's view (status, device, system, models_info) and the service counters")
async def stats(jobs: ManagerDep, metrics: MetricsDep) -> Any:
    # The first block is what the host's client reads (docs/server.md, "The host contract").
    det = jobs.detector
    host = {"status": "running", "uptime_seconds": round(metrics.uptime, 3),
            "device_info": await anyio.to_thread.run_sync(hostinfo.device_info, det.engine.device),
            "system_info": await anyio.to_thread.run_sync(hostinfo.system_info),
            "models_info": hostinfo.models_info(det)}
    return {**host, **metrics.snapshot(), "queue": jobs.depth,
            "jobs_stored": await anyio.to_thread.run_sync(jobs.store.count), "model": model_info(det)}


@router.get("/metrics", summary="The same counters in Prometheus' text format", response_class=PlainTextResponse)
async def metrics_text(request: Request, metrics: MetricsDep) -> Response:
    body, content_type = metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)
