"""`mffmoe scan`: a whole collection into a results file, resumably (pyarrow and Ray load inside)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mffmoe.cli.checks import check_device, check_engine, check_output_path
from mffmoe.cli.options import (
    AlignOpt,
    AllowMissingEmaOpt,
    BatchOpt,
    CropOpt,
    DeviceOpt,
    EngineOpt,
    FaceMarginOpt,
    FacePoolingOpt,
    FramesOpt,
    MaxPixelsOpt,
    MinFaceOpt,
    PoolingOpt,
    StoreFormat,
    ThresholdOpt,
    UntrainedOpt,
    WeightsOpt,
)
from mffmoe.cli.output import err, fail
from mffmoe.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_ENGINE,
    DEFAULT_FRAMES,
    DEFAULT_POOLING,
    DEFAULT_THRESHOLD,
)
from mffmoe.errors import MFFMoEError


def scan(
    source: Annotated[Path, typer.Argument(
        help="A directory (recursed), a text file of paths (one per line), or a CSV file with a `path` column.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="RESULTS: a .parquet file, a directory of Parquet parts (any other name), or a "
                            ".jsonl file. Re-running resumes into it.")],
    weights: WeightsOpt = None,
    frames: FramesOpt = DEFAULT_FRAMES,
    engine: EngineOpt = DEFAULT_ENGINE,
    device: DeviceOpt = DEFAULT_DEVICE,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    threshold: ThresholdOpt = DEFAULT_THRESHOLD,
    pooling: PoolingOpt = DEFAULT_POOLING,
    fmt: Annotated[StoreFormat, typer.Option(
        "--format", "-f", help="Results format (auto: .jsonl is JSONL, anything else Parquet).")] = StoreFormat.auto,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Decode processes on one machine (default: cores - 1, <= 8).")] = None,
    hash_threads: Annotated[int, typer.Option(
        "--hash-threads", min=1, help="Threads reading files to hash them.")] = 8,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Run on Ray: join $RAY_ADDRESS if set (as under `ray job submit`), else start a local "
                      "Ray instance.")] = False,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", metavar="ADDRESS", help="Join this Ray cluster (auto, ray://head:10001); "
                                                 "implies --ray.")] = None,
    replicas: Annotated[int | None, typer.Option(
        "--replicas", min=1, help="Model replicas on Ray (default: one per GPU, else one per --replica-cpus "
                                  "cores).")] = None,
    replica_cpus: Annotated[int | None, typer.Option(
        "--replica-cpus", min=1, help="Cores (torch threads) per CPU replica (default: the cluster's cores / "
                                      "replicas, replicas being cores / 4).")] = None,
    retry_errors: Annotated[bool, typer.Option(
        "--retry-errors", help="Analyze again inputs whose stored row is an error (by default a resumed scan "
                               "skips them).")] = False,
    max_pixels: MaxPixelsOpt = None,
    crop: CropOpt = None,
    face_margin: FaceMarginOpt = None,
    align: AlignOpt = None,
    face_pooling: FacePoolingOpt = "max",
    min_face: MinFaceOpt = None,
    untrained: UntrainedOpt = False,
    allow_missing_ema: AllowMissingEmaOpt = False,
    summary_json: Annotated[Path | None, typer.Option(
        "--summary-json", help="Also write the summary here.")] = None,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", help="Progress bar (default: when stderr is a terminal).")] = None,
) -> None:
    """Scan a whole collection into RESULTS, resumably: one row per input, bad files as error rows."""
    from mffmoe.config import DetectorConfig
    from mffmoe.scan.job import ScanOptions, run_scan
    from mffmoe.scan.store import open_store

    try:
        options = ScanOptions(
            source=source, out=out,
            detector=DetectorConfig(weights=weights, untrained=untrained, allow_missing_ema=allow_missing_ema,
                                    device=device, engine=engine, batch_size=batch_size, threshold=threshold,
                                    frames=frames, pooling=pooling, max_image_pixels=max_pixels, crop=crop,
                                    face_margin=face_margin, align=align, face_pooling=face_pooling,
                                    min_face=min_face),
            fmt=fmt.value, workers=workers, hash_threads=hash_threads, ray=ray_address or ("" if ray else None),
            replicas=replicas, replica_cpus=replica_cpus, retry_errors=retry_errors)
        check_engine(options.detector.engine)  # before any work
        open_store(options.out, options.fmt).check_path()
        if options.ray is None:  # on Ray the GPUs are the cluster's, not this machine's
            check_device(options.detector.device)
        if summary_json is not None:
            check_output_path(summary_json, "--summary-json")
        summary = run_scan(options, console=err, progress=progress)
    except MFFMoEError as e:
        raise fail(str(e)) from None
    summary.print(err)
    if summary_json:
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
