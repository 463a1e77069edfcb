"""CLI commands of this package (registered by mffmoe.cli through COMMAND_MODULES)."""
from __future__ import annotations

import inspect
import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from mffmoe.cli import Device, err, fail


class StoreFormat(str, Enum):
    auto = "auto"
    parquet = "parquet"
    jsonl = "jsonl"


def _analyze_default(option: str):
    """The default of one of `mffmoe analyze`'s options, so `scan` follows it when it changes."""
    from mffmoe import cli

    default = inspect.signature(cli.analyze).parameters[option].default
    return getattr(default, "default", default)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `mffmoe` app."""
    from mffmoe.config import DEFAULT_FRAMES, DEFAULT_THRESHOLD
    from mffmoe.errors import MFFMoEError

    @app.command()
    def scan(
        source: Path = typer.Argument(..., help="A directory (recursed), a text file of paths (one per line), "
                                      "or a CSV file with a `path` column."),
        out: Path = typer.Option(..., "--out", "-o", help="RESULTS: a .parquet file, a directory of Parquet "
                                 "parts (any other name), or a .jsonl file. Re-running resumes into it."),
        weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Weights dir or .safetensors file "
                                               "(default: $MFFMOE_WEIGHTS, then ./models/MFF-MoE-V1)."),
        frames: int = typer.Option(DEFAULT_FRAMES, "--frames", "-n", min=1, help="Frames sampled per video."),
        engine: str = typer.Option(_analyze_default("engine"), "--engine", help="Inference engine."),
        device: Device = typer.Option(Device.auto, "--device"),
        batch_size: int = typer.Option(16, "--batch-size", "-b", min=1,
                                       help="Images/frames per model call, mixed across files."),
        threshold: float = typer.Option(DEFAULT_THRESHOLD, "--threshold", min=0.0, max=1.0),
        pooling: str = typer.Option("mean", "--pooling", help="Video pooling: mean | confident | median."),
        fmt: StoreFormat = typer.Option(StoreFormat.auto, "--format", "-f",
                                        help="Results format (auto: .jsonl is JSONL, anything else Parquet)."),
        workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                              help="Decode processes on one machine (default: cores - 1, <= 8)."),
        hash_threads: int = typer.Option(8, "--hash-threads", min=1, help="Threads reading files to hash them."),
        ray: bool = typer.Option(False, "--ray", help="Run on Ray: join $RAY_ADDRESS if set (as under `ray job "
                                 "submit`), else start a local Ray instance."),
        ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDRESS",
                                                  help="Join this Ray cluster (auto, ray://head:10001); "
                                                  "implies --ray."),
        replicas: Optional[int] = typer.Option(None, "--replicas", min=1, help="Model replicas on Ray (default: "
                                               "one per GPU, else one per --replica-cpus cores)."),
        replica_cpus: Optional[int] = typer.Option(None, "--replica-cpus", min=1,
                                                   help="Cores (torch threads) per CPU replica (default: the "
                                                   "cluster's cores / replicas, replicas being cores / 4)."),
        retry_errors: bool = typer.Option(False, "--retry-errors", help="Analyze again inputs whose stored "
                                          "row is an error (by default a resumed scan skips them)."),
        untrained: bool = typer.Option(False, "--untrained", help="Random weights (pipeline check only)."),
        allow_missing_ema: bool = typer.Option(False, "--allow-missing-ema"),
        summary_json: Optional[Path] = typer.Option(None, "--summary-json", help="Also write the summary here."),
        progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                                help="Progress bar (default: when stderr is a terminal)."),
    ) -> None:
        """Scan a whole collection into RESULTS, resumably: one row per input, bad files as error rows."""
        from mffmoe.scan.job import ScanOptions, run_scan

        options = ScanOptions(source=source, out=out, weights=weights, frames=frames, engine=engine,
                              device=device.value, batch_size=batch_size, threshold=threshold, pooling=pooling,
                              fmt=fmt.value, workers=workers, hash_threads=hash_threads,
                              ray=ray_address or ("" if ray else None),
                              replicas=replicas, replica_cpus=replica_cpus, retry_errors=retry_errors,
                              untrained=untrained, allow_missing_ema=allow_missing_ema)
        try:
            summary = run_scan(options, console=err, progress=progress)
        except (MFFMoEError, ValueError) as e:
            raise fail(str(e)) from None
        summary.print(err)
        if summary_json:
            summary_json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
