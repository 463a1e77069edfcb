"""The FastAPI app: host-compatible `/analyze`, jobs with progress, stats, auth and the web page.

`create_app(detector=...)` serves a ready Detector (tests, embedding, the CLI); `create_app(settings=...)`
builds one from `settings.detector` at start-up. Either way the port only opens once the model is
loaded, so `/ping` answering means ready. The weights' structural checks (`mffmoe.model.verify`) then run
in the background (large weights in a child process); `/health` shows them, `checking` until done.
The routes live in `server/routes/`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from mffmoe import __version__
from mffmoe.inference.detector import Detector
from mffmoe.server import thumbnails
from mffmoe.server.deps import API_KEY_HEADER
from mffmoe.server.errors import install_handlers
from mffmoe.server.jobs import JobManager
from mffmoe.server.metrics import CountResponses, Metrics
from mffmoe.server.routes import analyze, frames, jobs, meta
from mffmoe.server.settings import ServerSettings
from mffmoe.server.store import JobStore
from mffmoe.server.uploads import remove_stale_uploads

log = logging.getLogger("mffmoe.server")


def _docs_assets() -> Path:
    """Swagger UI's files, shipped by the fastapi-offline package (no CDN: the machine may be offline)."""
    import fastapi_offline
    return Path(fastapi_offline.__file__).parent / "static"


def create_app(detector: Detector | None = None, settings: ServerSettings | None = None) -> FastAPI:
    """The service for `detector` (or, when None, the one `settings.detector` describes, loaded at
    start-up). Raises ConfigError for settings that cannot work."""
    settings = settings or ServerSettings()
    settings.check()  # again: fields may have been assigned since construction
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.detector is None:
            app.state.detector = await anyio.to_thread.run_sync(Detector.from_config, settings.detector)
        store = JobStore(settings.db_path)
        interrupted = store.fail_unfinished("the server stopped before the job finished")
        if interrupted:
            log.warning("%d unfinished job(s) from a previous run marked failed", interrupted)
        store.purge(settings.job_ttl_hours * 3600)
        thumbnails.prune(thumbnails.folder(settings.db_path), lambda job_id: store.get(job_id) is not None)
        stale = await anyio.to_thread.run_sync(remove_stale_uploads, settings.upload_dir)
        if stale:
            log.warning("removed %d upload file(s) left by a server that was killed", stale)
        app.state.store = store
        app.state.jobs = JobManager(app.state.detector, settings, store, metrics)
        app.state.ready = True
        app.state.weights = meta.CHECKING

        async def check_weights() -> None:  # in the background: ready does not wait for it
            app.state.weights = await anyio.to_thread.run_sync(meta.weights_checks, app.state.detector)
        checking = asyncio.get_running_loop().create_task(check_weights())
        try:
            yield
        finally:
            # Waited for, not cancelled: its thread cannot be stopped, and a process that exits while a
            # thread is inside torch aborts ("terminate called without an active exception"). Small
            # weights take well under a second; large ones run in a child that ends with the check.
            with contextlib.suppress(Exception):
                await checking
            app.state.ready = False
            await anyio.to_thread.run_sync(app.state.jobs.shutdown)
            store.close()

    app = FastAPI(title="MFF-MoE deepfake detector", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None,
                  description="Drop-in for the host service's MFF-MoE endpoint, plus jobs with progress. "
                              f"When the server has an API key, send it as the `{API_KEY_HEADER}` header.")
    app.state.settings = settings
    app.state.detector = detector
    app.state.metrics = metrics
    app.state.ready = False
    app.state.weights = None  # the weights' structural checks, run at start-up (`/health`)
    install_handlers(app)
    app.add_middleware(CountResponses, metrics=metrics)
    for router in (meta.public, meta.router, analyze.router, jobs.router, frames.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=meta.STATIC_DIR), name="static")
    app.mount("/docs-assets", StaticFiles(directory=_docs_assets()), name="docs-assets")
    return app
