"""`mffmoe serve`: the HTTP service (registered by mffmoe.cli through COMMAND_MODULES).

FastAPI and uvicorn are imported inside the command so `mffmoe --help` stays fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `mffmoe` app."""

    @app.command()
    def serve(
        weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Weights dir or .safetensors file "
                                               "(default: $MFFMOE_WEIGHTS, then ./models/MFF-MoE-V1)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
        port: int = typer.Option(8000, "--port", min=0, max=65535),
        max_upload_mb: float = typer.Option(500.0, "--max-upload-mb", min=0.001,
                                            help="Larger uploads get 413, refused while streaming."),
        queue_size: int = typer.Option(8, "--queue-size", min=0,
                                       help="Requests that may wait for a worker; more get 503 + Retry-After."),
        workers: int = typer.Option(1, "--workers", min=1, help="Inference threads in this one process "
                                    "(one model in memory; forwards are serialised, decoding overlaps)."),
        db: Optional[Path] = typer.Option(None, "--db", help="SQLite file for job results "
                                          "(default: $MFFMOE_DB, then ~/.local/state/mffmoe/jobs.sqlite3)."),
        upload_dir: Optional[Path] = typer.Option(None, "--upload-dir", help="Where uploads are streamed to "
                                                  "(default: the system temp dir); always cleaned up."),
        job_ttl_hours: float = typer.Option(168.0, "--job-ttl-hours", min=0.001,
                                            help="Finished jobs older than this are deleted at start-up."),
        frames: int = typer.Option(100, "--frames", "-n", min=1, help="Frames sampled per video by default."),
        max_frames: int = typer.Option(1000, "--max-frames", min=1, help="Largest `frames` a request may ask."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
        engine: str = typer.Option("torch", "--engine", help="Inference engine."),
        batch_size: int = typer.Option(16, "--batch-size", "-b", min=1),
        threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="FAKE iff score >= this."),
        untrained: bool = typer.Option(False, "--untrained", help="Random weights (pipeline check only)."),
        allow_missing_ema: bool = typer.Option(False, "--allow-missing-ema",
                                               help="Run on raw weights when the .state file is absent."),
        log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    ) -> None:
        """Serve the detector over HTTP: /analyze (host-compatible), /jobs, /ui web page, /docs.

        Set $MFFMOE_API_KEY to require the X-API-Key header on every endpoint but /, /ping and the page.
        """
        import uvicorn

        from mffmoe.cli import err, fail, load_detector
        from mffmoe.server.app import create_app
        from mffmoe.server.settings import ServerSettings

        overrides = {k: v for k, v in {"db_path": db, "upload_dir": upload_dir}.items() if v is not None}
        try:
            settings = ServerSettings(weights=weights, device=device, engine=engine, batch_size=batch_size,
                                      threshold=threshold, frames=frames, untrained=untrained,
                                      allow_missing_ema=allow_missing_ema, max_upload_mb=max_upload_mb,
                                      max_frames=max_frames, queue_size=queue_size, workers=workers,
                                      job_ttl_hours=job_ttl_hours, **overrides)
        except ValueError as e:
            raise fail(str(e)) from None
        if frames > max_frames:
            raise fail(f"--frames {frames} is above --max-frames {max_frames}")
        # Load before binding the port: a bad checkpoint is one error line, and /ping answering means ready.
        detector = load_detector(weights, device, untrained, allow_missing_ema, engine=engine,
                                 batch_size=batch_size, threshold=threshold, frames=frames)
        if not settings.api_key and host not in ("127.0.0.1", "localhost", "::1"):
            err.print(f"[yellow]warning:[/] listening on {host} without an API key; set $MFFMOE_API_KEY",
                      highlight=False)
        err.print(f"{detector.model_name} ready on {detector.engine.device}; jobs in {settings.db_path}; "
                  f"web page at http://{host}:{port}/ui", highlight=False)
        uvicorn.run(create_app(detector, settings), host=host, port=port, log_level=log_level,
                    timeout_graceful_shutdown=30)
