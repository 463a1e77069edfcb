"""The FastAPI app: host-compatible `/analyze`, jobs with progress, stats, auth and the web page.

`create_app(detector=...)` serves a ready Detector (tests, embedding); `create_app(settings=...)`
loads one from the settings' weights at start-up. Either way the port only opens once the model is
loaded, so `/ping` answering means ready.
"""
from __future__ import annotations

import json
import logging
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from mffmoe import __version__
from mffmoe.detector import Detector
from mffmoe.errors import MFFMoEError
from mffmoe.media.probe import probe_kind
from mffmoe.server.auth import API_KEY_HEADER, require_api_key
from mffmoe.server.errors import ApiError, from_mffmoe, install_handlers
from mffmoe.server.jobs import Job, JobManager, public_view
from mffmoe.server.schemas import UPLOAD_FORM, AnalyzeResponse, JobAccepted, JobView, error_responses
from mffmoe.server.settings import ServerSettings
from mffmoe.server.stats import Stats
from mffmoe.server.store import JobStore
from mffmoe.server.uploads import Upload, receive_upload

log = logging.getLogger("mffmoe.server")
STATIC_DIR = Path(__file__).parent / "static"
SSE_KEEPALIVE_S = 15.0
DISCONNECT_POLL_S = 0.5


def _docs_assets() -> Path:
    """Swagger UI's files, shipped by the fastapi-offline package (no CDN: the machine may be offline)."""
    import fastapi_offline
    return Path(fastapi_offline.__file__).parent / "static"


def _normalise_model(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


class _CountRequests:
    """Pure ASGI middleware (streams pass through untouched): counts responses by status for /stats."""

    def __init__(self, app: Any, stats: Stats) -> None:
        self.app, self.stats = app, stats

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.stats.count_request(status)


def load_detector(settings: ServerSettings) -> Detector:
    """Build the Detector the settings describe (the CLI does this before binding the port)."""
    common = dict(device=settings.device, engine=settings.engine, threshold=settings.threshold,
                  frames=settings.frames, batch_size=settings.batch_size)
    if settings.untrained:
        return Detector.untrained(**common)
    return Detector.from_dir(settings.weights, allow_missing_ema=settings.allow_missing_ema, **common)


def model_info(detector: Detector) -> dict[str, Any]:
    info = detector.info
    return {"name": detector.model_name, "roster": list(detector.engine.roster),
            "experts": len(detector.engine.roster), "input_size": detector.input_size,
            "engine": detector.engine.name, "device": detector.engine.device, "threshold": detector.threshold,
            "frames": detector.frames, "pooling": detector.pooling, "untrained": detector.untrained,
            "ema": info.ema, "layout": info.layout, "source": info.source}


def create_app(detector: Optional[Detector] = None, settings: Optional[ServerSettings] = None) -> FastAPI:
    settings = settings or ServerSettings()
    stats = Stats()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.detector is None:
            app.state.detector = await anyio.to_thread.run_sync(load_detector, settings)
        store = JobStore(settings.db_path)
        interrupted = store.fail_unfinished("the server stopped before the job finished")
        if interrupted:
            log.warning("%d unfinished job(s) from a previous run marked failed", interrupted)
        store.purge(settings.job_ttl_hours * 3600)
        app.state.store = store
        app.state.jobs = JobManager(app.state.detector, settings, store, stats)
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            await anyio.to_thread.run_sync(app.state.jobs.shutdown)
            store.close()

    app = FastAPI(title="MFF-MoE deepfake detector", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None,
                  description="Drop-in for the host service's MFF-MoE endpoint, plus jobs with progress. "
                              f"When the server has an API key, send it as the `{API_KEY_HEADER}` header.")
    app.state.settings = settings
    app.state.detector = detector
    app.state.stats = stats
    app.state.ready = False
    install_handlers(app)
    app.add_middleware(_CountRequests, stats=stats)

    open_routes = APIRouter()
    keyed = APIRouter(dependencies=[Depends(require_api_key)])

    def manager(request: Request) -> JobManager:
        jobs = getattr(request.app.state, "jobs", None)
        if jobs is None or not request.app.state.ready:
            raise ApiError(503, "not_ready", "the model is not loaded", headers={"Retry-After": "5"})
        return jobs

    # -- open endpoints --------------------------------------------------------------------------
    @open_routes.get("/", summary="Service info (a link page for browsers)")
    async def root(request: Request) -> Any:
        if "text/html" in request.headers.get("accept", ""):
            return FileResponse(STATIC_DIR / "home.html")
        return {"service": "mffmoe", "version": __version__, "model": request.app.state.detector.model_name
                if request.app.state.detector else None, "ui": "/ui", "docs": "/docs",
                "openapi": "/openapi.json", "auth": bool(settings.api_key)}

    @open_routes.get("/ping", summary="Liveness; answers 200 only once the model is loaded")
    async def ping(request: Request) -> Any:
        if not request.app.state.ready:
            raise ApiError(503, "not_ready", "the model is not loaded", headers={"Retry-After": "5"})
        return {"status": "ok"}

    @open_routes.get("/ui", include_in_schema=False)
    async def ui() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @open_routes.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        # A static page: it fetches /openapi.json with the key the person entered on /ui or here.
        return FileResponse(STATIC_DIR / "docs.html")

    # -- keyed endpoints -------------------------------------------------------------------------
    @keyed.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @keyed.get("/health", summary="Readiness: model loaded, engine, device")
    async def health(request: Request) -> Any:
        det: Detector | None = request.app.state.detector
        ready = bool(request.app.state.ready and det is not None)
        body = {"status": "ok" if ready else "loading", "ready": ready,
                **({"model": det.model_name, "engine": det.engine.name, "device": det.engine.device,
                    "untrained": det.untrained} if det is not None else {})}
        return JSONResponse(body, status_code=200 if ready else 503)

    @keyed.get("/models", summary="The served model")
    async def models(request: Request) -> Any:
        det = manager(request).detector
        return {"default": det.model_name, "models": [model_info(det)]}

    @keyed.get("/stats", summary="Uptime, requests, queue, latency, model")
    async def get_stats(request: Request) -> Any:
        jobs = manager(request)
        return {**stats.snapshot(), "queue": jobs.depth,
                "jobs_stored": await anyio.to_thread.run_sync(jobs.store.count),
                "model": model_info(jobs.detector)}

    async def accept(request: Request, *, persist: bool) -> Job:
        """Reserve a queue slot, stream the upload to disk, check the form and the media type, queue it."""
        jobs = manager(request)
        slot = jobs.reserve()
        upload: Upload | None = None
        try:
            upload = await receive_upload(request, max_bytes=settings.max_upload_bytes,
                                          upload_dir=settings.upload_dir)
            frames = _frames_field(upload.fields.get("frames"), settings.max_frames)
            model = upload.fields.get("model") or jobs.detector.model_name
            if _normalise_model(model) not in {_normalise_model(jobs.detector.model_name), "mffmoe", "mffmoev1"}:
                raise ApiError(400, "unknown_model",
                               f"model {model!r} is not served here; this server runs {jobs.detector.model_name!r}")
            try:
                kind = await anyio.to_thread.run_sync(probe_kind, upload.path)
            except MFFMoEError as e:
                raise from_mffmoe(e, {str(upload.path): upload.filename}) from None
            job = Job(upload, frames=frames, model=jobs.detector.model_name,
                      media_id=upload.fields.get("mediaId"), user_id=upload.fields.get("userId"),
                      persist=persist, media_type=kind.value)
        except BaseException:
            if upload is not None:
                upload.remove()
            slot.release()
            raise
        return jobs.submit(job, slot)

    @keyed.post("/analyze", summary="Analyze one upload and wait for the result (the host's contract)",
                response_model=AnalyzeResponse, openapi_extra=UPLOAD_FORM,
                responses=error_responses(400, 401, 413, 415, 422, 503))
    async def analyze(request: Request) -> JSONResponse:
        job = await accept(request, persist=False)
        checked = time.monotonic()
        while not job.is_final:
            await job.changed(job.version, DISCONNECT_POLL_S)
            if time.monotonic() - checked >= DISCONNECT_POLL_S and not job.is_final:
                checked = time.monotonic()
                if await request.is_disconnected():
                    manager(request).cancel(job)  # nobody will read the answer: free the worker
                    raise ApiError(400, "client_disconnected", "the client went away")
        if job.result is not None:
            return JSONResponse(job.result)
        raise ApiError(job.http_status or 500, job.error["error"], job.error["message"])

    @keyed.post("/jobs", status_code=202, summary="Queue an analysis; returns a job id at once",
                response_model=JobAccepted, openapi_extra=UPLOAD_FORM,
                responses=error_responses(400, 401, 413, 415, 503))
    async def create_job(request: Request) -> JSONResponse:
        job = await accept(request, persist=True)
        links = {"self": f"/jobs/{job.id}", "events": f"/jobs/{job.id}/events"}
        return JSONResponse({"job_id": job.id, "status": job.status.value, "links": links}, status_code=202,
                            headers={"Location": links["self"]})

    def find_job(request: Request, job_id: str) -> dict[str, Any]:
        view = manager(request).get(job_id)
        if view is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return view

    @keyed.get("/jobs/{job_id}", response_model=JobView, summary="Status, progress and (when done) the result",
               responses=error_responses(401, 404))
    async def get_job(request: Request, job_id: str) -> JSONResponse:
        return JSONResponse(await anyio.to_thread.run_sync(find_job, request, job_id))

    @keyed.delete("/jobs/{job_id}", response_model=JobView, summary="Cancel a queued or running job",
                  responses=error_responses(401, 404))
    async def cancel_job(request: Request, job_id: str) -> JSONResponse:
        jobs = manager(request)
        job = jobs.active.get(job_id)
        if job is not None:
            jobs.cancel(job)
            await job.changed(job.version, 0.2)
        return JSONResponse(await anyio.to_thread.run_sync(find_job, request, job_id))

    @keyed.get("/jobs/{job_id}/events", summary="Progress as server-sent events",
               responses={200: {"content": {"text/event-stream": {}},
                                "description": "events `status`, `progress`, then one of `done`, `failed`, "
                                               "`cancelled`; each `data` is the job as GET /jobs/{id} gives it"},
                          **error_responses(401, 404)})
    async def job_events(request: Request, job_id: str) -> StreamingResponse:
        live = manager(request).active.get(job_id)  # taken first: it may finish (and leave) meanwhile
        first = public_view(live.record()) if live else await anyio.to_thread.run_sync(find_job, request, job_id)
        return StreamingResponse(_events(request, first, live), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    app.include_router(open_routes)
    app.include_router(keyed)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/docs-assets", StaticFiles(directory=_docs_assets()), name="docs-assets")
    return app


def _frames_field(value: str | None, limit: int) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        frames = int(value)
    except ValueError:
        raise ApiError(400, "invalid_request", f"frames must be an integer, got {value!r}") from None
    if not 1 <= frames <= limit:
        raise ApiError(400, "invalid_request", f"frames must be between 1 and {limit}, got {frames}")
    return frames


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def _events(request: Request, first: dict[str, Any], job: Job | None) -> AsyncIterator[bytes]:
    """`status` now, `progress` on every change, then the final state; ends itself."""
    if job is None:  # already final (or stored by an earlier run)
        yield _sse(first["status"], first)
        return
    yield _sse("status", first)
    last_status, last_done = first["status"], first["progress"]["done"]
    while True:
        version = job.version
        view = public_view(job.record())
        if job.is_final:
            yield _sse(view["status"], view)
            return
        if view["status"] != last_status:
            yield _sse("status", view)
        elif view["progress"]["done"] != last_done:
            yield _sse("progress", view)
        last_status, last_done = view["status"], view["progress"]["done"]
        if not await job.changed(version, SSE_KEEPALIVE_S):
            if await request.is_disconnected():
                return
            yield b": keep-alive\n\n"
