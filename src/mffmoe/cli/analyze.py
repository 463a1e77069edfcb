"""`mffmoe analyze`: one result per input, in input order, and the engine policy of a one-shot job.

A one-shot run is kept small: `skip_unused_imports` runs before torch/timm bring in triton, a single
input runs lean (weights leave memory layer by layer), and the process ends without the interpreter's
teardown (`process.request_fast_exit`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mffmoe.cli.checks import ReportFile, check_device, check_engine, check_precision_here, probe_inputs
from mffmoe.cli.options import (
    AlignOpt,
    AllowMissingEmaOpt,
    BatchOpt,
    CropOpt,
    DeviceOpt,
    EarlyExitOpt,
    EngineOpt,
    ExplainDirOpt,
    ExplainExpertsOpt,
    ExplainFramesOpt,
    ExplainMethodOpt,
    ExplainOpt,
    FaceMarginOpt,
    FacePoolingOpt,
    Format,
    FormatOpt,
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
from mffmoe.cli.output import fail, failed_line, progress, result_row, write_results
from mffmoe.cli.process import request_fast_exit
from mffmoe.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_ENGINE,
    DEFAULT_FRAMES,
    DEFAULT_POOLING,
    DEFAULT_THRESHOLD,
)
from mffmoe.errors import ConfigError, MFFMoEError

if TYPE_CHECKING:
    from mffmoe.explain.base import ExplainOptions
    from mffmoe.inference.detector import Detector
    from mffmoe.media.probe import MediaKind


def estimate_images(kinds: Sequence[MediaKind], frames: int) -> int:
    """Images a job will run through the model: 1 per image, `frames` per video (kinds as probed)."""
    from mffmoe.media.probe import MediaKind

    return max(1, sum(frames if kind is MediaKind.VIDEO else 1 for kind in kinds))


def analyze_engine_options(engine: str, kinds: Sequence[MediaKind], frames: int,
                           autocast: str | None = None) -> dict[str, Any]:
    """Engine options for an `analyze` job over inputs of these (probed) kinds. A single input runs lean
    (torch weights leave memory layer by layer, experts one after another), and `auto` is told the job's
    size so that it weighs start-up against per-image time (see mffmoe.engine.auto). OpenVINO holds one
    expert at a time (`resident=False`): the job compiles every expert once per batch, as loading would."""
    from mffmoe.engine import ALIASES
    from mffmoe.engine.registry import one_shot_options

    name = ALIASES.get(engine, engine)
    options: dict[str, Any] = {}
    if name in ("torch", "auto") and len(kinds) == 1:
        options["lean"] = True
    if name == "auto":
        options["images"] = estimate_images(kinds, frames)
    options.update(one_shot_options(name))  # OpenVINO compiles each expert for its batch, then frees it
    if autocast:
        if name not in ("torch", "auto"):
            raise ConfigError(f"--autocast is for the torch engine on CUDA, not {name}")
        options["autocast"] = autocast
    return options


def analyze(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Image/video files or directories (recursed).")],
    weights: WeightsOpt = None,
    frames: FramesOpt = DEFAULT_FRAMES,
    device: DeviceOpt = DEFAULT_DEVICE,
    engine: EngineOpt = DEFAULT_ENGINE,
    early_exit: EarlyExitOpt = False,
    precision: PrecisionOpt = Precision.fp32,
    autocast: Annotated[str | None, typer.Option(
        "--autocast", help="CUDA only, torch engine: fp16 | bf16 autocast (faster, not exact; use a larger "
                           "--batch-size).")] = None,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    fmt: FormatOpt = Format.table,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write the report here, not stdout.")] = None,
    threshold: ThresholdOpt = DEFAULT_THRESHOLD,
    pooling: PoolingOpt = DEFAULT_POOLING,
    max_pixels: MaxPixelsOpt = None,
    crop: CropOpt = None,
    face_margin: FaceMarginOpt = None,
    align: AlignOpt = None,
    face_pooling: FacePoolingOpt = "max",
    min_face: MinFaceOpt = None,
    untrained: UntrainedOpt = False,
    allow_missing_ema: AllowMissingEmaOpt = False,
    explain: ExplainOpt = False,
    explain_dir: ExplainDirOpt = None,
    explain_frames: ExplainFramesOpt = 3,
    explain_experts: ExplainExpertsOpt = False,
    explain_method: ExplainMethodOpt = "auto",
) -> None:
    """Analyze images and videos; print one result per input, in input order.

    With --explain, each result also says where the evidence that moved its score lies (maps; see
    --explain). A map is not proof that a region was manipulated.

    Options, the output path and the inputs are checked before the model loads: when no input can be
    read, their errors are reported and no model is loaded."""
    request_fast_exit(ctx)
    from mffmoe.engine.memory import skip_unused_imports

    skip_unused_imports()  # before torch/timm are imported: keeps one-shot runs small
    from mffmoe._util.fs import expand_paths
    from mffmoe.config import DetectorConfig

    report: ReportFile | None = None
    try:
        config = DetectorConfig(weights=weights, untrained=untrained, allow_missing_ema=allow_missing_ema,
                                device=device, engine=engine, early_exit=early_exit, batch_size=batch_size,
                                precision=precision.value,
                                threshold=threshold, frames=frames, pooling=pooling, max_image_pixels=max_pixels,
                                crop=crop, face_margin=face_margin, align=align, face_pooling=face_pooling,
                                min_face=min_face)
        check_engine(config.engine)
        check_precision_here(config.precision, config.engine)
        explaining = explain_options(explain or explain_dir is not None or explain_experts, explain_dir,
                                     explain_frames, explain_experts, explain_method)
        files = expand_paths(paths)
        if not files:
            raise fail("no input files")
        probed = probe_inputs(files, config.max_image_pixels)
        good = [f for f, kind in zip(files, probed, strict=True) if not isinstance(kind, MFFMoEError)]
        kinds = [kind for kind in probed if not isinstance(kind, MFFMoEError)]
        options = analyze_engine_options(config.engine, kinds, config.frames, autocast)
        if good:
            check_device(config.device)
        report = ReportFile(output) if output is not None else None
        detector: Detector | None = None
        if good:
            from mffmoe.inference.detector import Detector

            detector = Detector.from_config(config.model_copy(update={"engine_options": options}))
    except MFFMoEError as e:
        if report is not None:
            report.discard()
        raise fail(str(e)) from None
    try:
        rows = _run(detector, files, probed, good, explaining)
        write_results(rows, fmt, report)
    finally:  # interrupted or failed: no temporary report left beside --output
        if report is not None:
            report.discard()
    n_failed = sum("error" in r for r in rows)
    if n_failed:
        failed_line(n_failed, len(rows))
        raise typer.Exit(1)


def explain_options(on: bool, out_dir: Path | None, frames: int, experts: bool, method: str) -> ExplainOptions | None:
    """The --explain options, checked before any model loads (the folder can be written, the method can
    run here); None without --explain."""
    if not on:
        return None
    from pydantic import ValidationError

    from mffmoe.explain.base import ExplainOptions
    from mffmoe.explain.explainer import check_options

    if method not in ("auto", "gradcam", "occlusion"):
        raise ConfigError(f"--explain-method {method!r}: choose auto, gradcam or occlusion")
    try:
        options = ExplainOptions(method=method, frames=frames, experts=experts, out_dir=out_dir)  # type: ignore[arg-type]
    except ValidationError as e:
        raise ConfigError(f"--explain: {e.errors()[0]['msg']}") from None
    return check_options(options)


def _run(detector: Detector | None, files: list[Path], probed: list[MediaKind | MFFMoEError],
         good: list[Path], explaining: ExplainOptions | None = None) -> list[dict[str, Any]]:
    """One row per input in input order: the probe's error for inputs that failed it, else the analysis
    (explained after it was scored, with --explain)."""
    rows: list[dict[str, Any]] = []
    with progress() as bar:
        files_task = bar.add_task("files", total=len(files))
        frames_task = bar.add_task("frames", total=None, visible=False)

        def on_frames(done: int, total: int) -> None:
            bar.update(frames_task, completed=done, total=total, visible=True)

        results = detector.analyze_many(good, on_video_progress=on_frames) if detector else None
        for f, kind in zip(files, probed, strict=True):
            if isinstance(kind, MFFMoEError):  # probed before the model loaded: its row, as analysis gives it
                rows.append(result_row(str(f), kind))
            else:
                assert results is not None and detector is not None  # loaded whenever an input passed the probe
                path, result = next(results)
                if explaining is not None and not isinstance(result, MFFMoEError):
                    from mffmoe.explain.explainer import explained

                    result = explained(detector, path, result, explaining)
                rows.append(result_row(path, result))
            bar.update(files_task, advance=1)
            bar.update(frames_task, visible=False, completed=0)
        if results is not None:
            leftover = next(results, None)  # run it to its end: its decode threads stop now
            assert leftover is None, leftover
    return rows
