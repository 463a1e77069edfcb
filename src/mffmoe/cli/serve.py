"""`mffmoe serve`: the HTTP service. FastAPI and uvicorn are imported inside the command so that
`mffmoe --help` stays fast."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mffmoe.cli.checks import check_options
from mffmoe.cli.options import (
    AllowMissingEmaOpt,
    BatchOpt,
    DeviceOpt,
    EarlyExitOpt,
    EngineOpt,
    FramesOpt,
    MaxPixelsOpt,
    MinFaceOpt,
    PoolingOpt,
    Precision,
    PrecisionOpt,
    ThresholdOpt,
    UntrainedOpt,
    WeightsOpt,
)
from mffmoe.cli.output import fail, one_line
from mffmoe.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_ENGINE,
    DEFAULT_FRAMES,
    DEFAULT_POOLING,
    DEFAULT_THRESHOLD,
)
from mffmoe.errors import ConfigError, MFFMoEError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(
    weights: WeightsOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    max_upload_mb: Annotated[float, typer.Option(
        "--max-upload-mb", min=0.001, help="Larger uploads get 413, refused while streaming.")] = 500.0,
    queue_size: Annotated[int, typer.Option(
        "--queue-size", min=0, help="Requests that may wait for a worker; more get 503 + Retry-After.")] = 8,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, help="Inference threads in this one process (one model in memory; forwards are "
                                 "serialised, decoding overlaps).")] = 1,
    db: Annotated[Path | None, typer.Option(
        "--db", help="SQLite file for job results (default: $MFFMOE_DB, then "
                     "~/.local/state/mffmoe/jobs.sqlite3).")] = None,
    upload_dir: Annotated[Path | None, typer.Option(
        "--upload-dir", help="Where uploads are streamed to (default: the system temp dir); always "
                             "cleaned up.")] = None,
    job_ttl_hours: Annotated[float, typer.Option(
        "--job-ttl-hours", min=0.001, help="Finished jobs older than this are deleted at start-up.")] = 168.0,
    frames: FramesOpt = DEFAULT_FRAMES,
    max_frames: Annotated[int, typer.Option(
        "--max-frames", min=1, help="Largest `frames` a request may ask.")] = 1000,
    device: DeviceOpt = DEFAULT_DEVICE,
    engine: EngineOpt = DEFAULT_ENGINE,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    threshold: ThresholdOpt = DEFAULT_THRESHOLD,
    pooling: PoolingOpt = DEFAULT_POOLING,
    early_exit: EarlyExitOpt = False,
    precision: PrecisionOpt = Precision.fp32,
    max_pixels: MaxPixelsOpt = None,
    untrained: UntrainedOpt = False,
    allow_missing_ema: AllowMissingEmaOpt = False,
    crop: Annotated[str, typer.Option(
        "--crop", metavar="[frame|faces|auto]",
        help="What a request without a crop field gets: frame (the host's numbers, default), faces or auto. "
             "The web page always asks for what its switch shows.")] = "frame",
    min_face: MinFaceOpt = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve the detector over HTTP: /analyze (host-compatible), /jobs, /ui web page, /docs.

    Set $MFFMOE_API_KEY to require the X-API-Key header on every endpoint but /, /ping and the page.
    """
    import uvicorn

    from mffmoe.config import DetectorConfig
    from mffmoe.inference.detector import Detector
    from mffmoe.server.app import create_app
    from mffmoe.server.settings import ServerSettings

    storage: dict[str, Any] = {k: v for k, v in {"db_path": db, "upload_dir": upload_dir}.items() if v is not None}
    try:
        settings = ServerSettings(
            detector=DetectorConfig(weights=weights, untrained=untrained, allow_missing_ema=allow_missing_ema,
                                    device=device, engine=engine, batch_size=batch_size, threshold=threshold,
                                    frames=frames, pooling=pooling, early_exit=early_exit,
                                    max_image_pixels=max_pixels, crop=crop, min_face=min_face,
                                    precision=precision.value),
            max_upload_mb=max_upload_mb, max_frames=max_frames, queue_size=queue_size, workers=workers,
            job_ttl_hours=job_ttl_hours, **storage)
        check_options(settings.detector.engine, settings.detector.device, settings.detector.precision)
        if settings.db_path.is_dir():
            raise ConfigError(f"--db {settings.db_path}: is a directory; give the SQLite file's name")
        if settings.upload_dir.exists() and not settings.upload_dir.is_dir():
            raise ConfigError(f"--upload-dir {settings.upload_dir}: is a file, not a directory")
        # Load before binding the port: a bad checkpoint is one error line, and /ping answering means ready.
        detector = Detector.from_config(settings.detector)
    except MFFMoEError as e:
        raise fail(str(e)) from None
    if not settings.api_key and host not in LOCAL_HOSTS:
        one_line(f"warning: listening on {host} without an API key; set $MFFMOE_API_KEY", "yellow")
    one_line(f"{detector.model_name} ready on {detector.engine.device}; jobs in {settings.db_path}; "
             f"web page at http://{host}:{port}/ui", None)
    uvicorn.run(create_app(detector, settings), host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=30)
