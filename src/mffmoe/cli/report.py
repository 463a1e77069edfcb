"""`mffmoe report`: one report per input (JSON, self-contained HTML, PDF), optionally signed;
`mffmoe report verify` checks a signed report (and that a file is the one it was made from);
`mffmoe keygen` makes the Ed25519 key pair that signs them.

`report` is a group whose default command is `create`: `mffmoe report INPUT... --out DIR` is
`mffmoe report create INPUT... --out DIR`, and `mffmoe report verify REPORT.json` is the check (an input
literally named `verify` is reached as `./verify`). Everything that needs no model is checked before
one loads: the formats, the output folder, the signing key, Chromium for PDFs, the inputs.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from mffmoe.cli.analyze import explain_options
from mffmoe.cli.checks import check_device, check_engine, check_precision_here, probe_inputs
from mffmoe.cli.options import (
    AlignOpt,
    AllowMissingEmaOpt,
    BatchOpt,
    CropOpt,
    DeviceOpt,
    EarlyExitOpt,
    EngineOpt,
    ExplainExpertsOpt,
    ExplainFramesOpt,
    ExplainMethodOpt,
    ExplainOpt,
    FaceMarginOpt,
    FacePoolingOpt,
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
from mffmoe.cli.output import fail, failed_line, one_line, print_error, progress
from mffmoe.cli.process import request_fast_exit
from mffmoe.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_ENGINE,
    DEFAULT_FRAMES,
    DEFAULT_POOLING,
    DEFAULT_THRESHOLD,
)
from mffmoe.errors import ConfigError, ErrorInfo, MFFMoEError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mffmoe.explain.base import ExplainOptions
    from mffmoe.inference.detector import Detector
    from mffmoe.results import AnalysisResult

FORMATS = ("json", "html", "pdf")
DEFAULT_FORMATS = "json,html"
#: The provenance reader, when this build has one (`mffmoe.provenance`, developed separately): looked up by
#: name so that reports work, saying "no provenance found", without it.
PROVENANCE_MODULE = "mffmoe.provenance"


class DefaultCreate(TyperGroup):
    """A group that runs `create` when the first word is not one of its commands (or --help)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # a click Context (typer vendors click)
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["create", *args]
        return super().parse_args(ctx, args)


report_app = typer.Typer(cls=DefaultCreate, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                         help="Reports of analyses (JSON, HTML, PDF; Ed25519-signed with --sign), and their check. "
                              "`mffmoe report INPUT... --out DIR` is `mffmoe report create ...`.")


def report_engine_options(engine: str) -> dict[str, Any]:
    """The engine runs the same way whatever the number of inputs: no lean one-input mode, no job-size
    hint for `auto` (which then picks the lowest latency, as a server does), so that a file's report (its
    engine and settings) never depends on what else was in the same command. OpenVINO still compiles one
    expert at a time, as in every job that ends (`one_shot_options`)."""
    from mffmoe.engine.registry import one_shot_options

    return one_shot_options(engine)


def parse_formats(text: str) -> tuple[str, ...]:
    """`--format json,html,pdf` as a tuple in a fixed order; a ConfigError names an unknown one."""
    asked = [p.strip().lower() for p in text.split(",") if p.strip()]
    unknown = [p for p in asked if p not in FORMATS]
    if unknown or not asked:
        raise ConfigError(f"--format {text!r}: choose one or more of {', '.join(FORMATS)}, comma-separated")
    return tuple(f for f in FORMATS if f in asked)


def check_out_dir(out: Path) -> Path:
    """The report folder, made if missing; a ConfigError when it cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot make the folder ({e.strerror or e})") from None
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: not a writable folder")
    return out


def report_names(files: list[Path]) -> list[str]:
    """`<stem>` per input, made unique (`<stem>-2`, ...) when two inputs share a stem."""
    seen: dict[str, int] = {}
    out = []
    for f in files:
        n = seen.get(f.stem, 0) + 1
        seen[f.stem] = n
        out.append(f.stem if n == 1 else f"{f.stem}-{n}")
    return out


def read_provenance(path: Path) -> dict[str, Any] | None:
    """What the provenance reader finds in `path` as a dict (None: nothing found, or no reader here)."""
    try:
        module = importlib.import_module(PROVENANCE_MODULE)
    except ImportError:
        return None
    reader = getattr(module, "read_provenance", None)
    if reader is None:
        return None
    try:
        found = reader(path)
    except MFFMoEError as e:  # the reader's own failure is reported in the report, never taken as "none"
        return {"error": ErrorInfo.of(e).to_dict()}
    if found is None:
        return None
    dumped = found.model_dump(mode="json") if hasattr(found, "model_dump") else found
    return dict(dumped) if isinstance(dumped, dict) else None


@report_app.command("create")
def create(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Image/video files or directories (recursed).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the reports: DIR/<stem>.report.{json,html,"
                                                         "pdf} (made if missing).")],
    formats: Annotated[str, typer.Option("--format", "-f", metavar="json,html,pdf",
                                         help="Which forms to write, comma-separated. pdf needs Chromium.")
                       ] = DEFAULT_FORMATS,
    sign_key: Annotated[Path | None, typer.Option("--sign", metavar="KEYFILE", help="Sign the JSON report with "
                                                  "this Ed25519 private key (`mffmoe keygen`).")] = None,
    weights: WeightsOpt = None,
    frames: FramesOpt = DEFAULT_FRAMES,
    device: DeviceOpt = DEFAULT_DEVICE,
    engine: EngineOpt = DEFAULT_ENGINE,
    early_exit: EarlyExitOpt = False,
    precision: PrecisionOpt = Precision.fp32,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
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
    explain_frames: ExplainFramesOpt = 3,
    explain_experts: ExplainExpertsOpt = False,
    explain_method: ExplainMethodOpt = "auto",
) -> None:
    """Analyze each input and write its report: the file's SHA-256, size and type, provenance, the verdict
    with the experts' agreement, calibration and scope flags, faces and persons, heatmaps (--explain), the
    per-frame chart, the model, its weights' hashes, the engine, every setting, software versions and
    timestamps. One bad input never stops the others (exit status 1 when any failed)."""
    request_fast_exit(ctx)
    from mffmoe.engine.memory import skip_unused_imports

    skip_unused_imports()
    from mffmoe._util.fs import expand_paths
    from mffmoe.config import DetectorConfig

    try:
        kinds_wanted = parse_formats(formats)
        if sign_key is not None and "json" not in kinds_wanted:
            raise ConfigError("--sign signs the JSON report: add json to --format")
        key = _signing_key(sign_key)
        if "pdf" in kinds_wanted:
            from mffmoe.report.pdf import find_browser

            find_browser()
        config = DetectorConfig(weights=weights, untrained=untrained, allow_missing_ema=allow_missing_ema,
                                device=device, engine=engine, early_exit=early_exit, batch_size=batch_size,
                                precision=precision.value, threshold=threshold, frames=frames, pooling=pooling,
                                max_image_pixels=max_pixels, crop=crop, face_margin=face_margin, align=align,
                                face_pooling=face_pooling, min_face=min_face)
        check_engine(config.engine)
        check_precision_here(config.precision, config.engine)
        explaining = explain_options(explain or explain_experts, None, explain_frames, explain_experts,
                                     explain_method)
        files = expand_paths(paths)
        if not files:
            raise fail("no input files")
        check_out_dir(out)
        probed = probe_inputs(files, config.max_image_pixels)
        good = [f for f, kind in zip(files, probed, strict=True) if not isinstance(kind, MFFMoEError)]
        detector: Detector | None = None
        if good:
            check_device(config.device)
            from mffmoe.inference.detector import Detector

            options = report_engine_options(config.engine)
            detector = Detector.from_config(config.model_copy(update={"engine_options": options}))
    except MFFMoEError as e:
        raise fail(str(e)) from None
    names = report_names(files)
    failed = 0
    with progress() as bar:
        task = bar.add_task("reports", total=len(files))
        results = iter(detector.analyze_many(good)) if detector is not None else None
        for f, kind, stem in zip(files, probed, names, strict=True):
            outcome: AnalysisResult | MFFMoEError
            if isinstance(kind, MFFMoEError):
                outcome = kind
            else:
                assert results is not None and detector is not None
                _, outcome = next(results)
            if isinstance(outcome, MFFMoEError):
                print_error(f"{f}: {outcome}")
                failed += 1
            else:
                assert detector is not None
                try:
                    written = write_reports(f, outcome, detector, out / stem, kinds_wanted, key, explaining)
                except MFFMoEError as e:
                    print_error(f"{f}: report not written: {e}")
                    failed += 1
                else:
                    print(f"{f}: {outcome.prediction} {outcome.score:.4f} -> "
                          + ", ".join(str(p) for p in written), flush=True)
            bar.update(task, advance=1)
        if results is not None:
            next(results, None)
    if failed:
        failed_line(failed, len(files))
        raise typer.Exit(1)


def _signing_key(path: Path | None) -> Ed25519PrivateKey | None:
    if path is None:
        return None
    from mffmoe.report.sign import load_private_key

    return load_private_key(path)


def write_reports(path: Path, result: AnalysisResult, detector: Detector, base: Path, formats: tuple[str, ...],
                  key: Ed25519PrivateKey | None, explaining: ExplainOptions | None) -> list[Path]:
    """Explain (with --explain), build, sign and write one input's report in each format asked for;
    each file appears whole or not at all."""
    from mffmoe._util.fs import atomic_write
    from mffmoe.report.content import build_report
    from mffmoe.report.render import render_as
    from mffmoe.report.sign import sign

    if explaining is not None:
        from mffmoe.explain.explainer import explained

        result = explained(detector, path, result, explaining)
    try:
        report = build_report(path, result, detector, provenance=read_provenance(path))
    except OSError as e:
        raise ConfigError(f"cannot read {path} again to hash it: {e.strerror or e}") from None
    if key is not None:
        report = sign(report, key)
    written = []
    try:
        for fmt in formats:
            target = base.with_name(f"{base.name}.report.{fmt}")
            data = render_as(report, fmt, path)
            with atomic_write(target, "wb") as f:
                f.write(data)
            written.append(target)
    except OSError as e:
        raise ConfigError(f"cannot write the report in {base.parent}: {e.strerror or e}") from None
    return written


@report_app.command("verify")
def verify_report(
    report: Annotated[Path, typer.Argument(metavar="REPORT.json",
                                           help="A JSON report (`mffmoe report ... --sign KEY`).")],
    input_file: Annotated[Path | None, typer.Option("--input", "-i", help="Also check that this file is the "
                                                    "one the report was made from (SHA-256).")] = None,
    key: Annotated[Path | None, typer.Option("--key", "-k", metavar="PUB", help="Also check that this public "
                                             "key (PEM or base64) signed it.")] = None,
    content_only: Annotated[bool, typer.Option("--content-only", help="Check the signed content only, not "
                                               "that the file is byte for byte as written (for a report "
                                               "re-serialised on purpose).")] = False,
) -> None:
    """Check a signed report: exit 0 and `ok: ...` when it verifies, else 1 and one line saying why
    (unsigned, changed after signing, another key, another input file)."""
    from mffmoe.report.sign import verify

    try:
        data = report.read_bytes()
    except OSError as e:
        raise fail(f"{report}: {e.strerror or e}", code=1) from None
    try:
        outcome = verify(data, input_file=input_file, public_key=key, strict=not content_only)
    except MFFMoEError as e:
        raise fail(str(e), code=1) from None
    if not outcome.ok:
        raise fail(f"{report}: {outcome.message}", code=1)
    print(f"ok: {report}: {outcome.message}")


def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the key pair (made if missing).")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Make an Ed25519 key pair for signing reports: DIR/mffmoe-ed25519.key (private, mode 0600; keep it
    secret) and DIR/mffmoe-ed25519.pub (give it to whoever checks your reports)."""
    from mffmoe.report.sign import generate_keypair, key_id, load_public_key

    try:
        private, public = generate_keypair(out, force=force)
    except MFFMoEError as e:
        raise fail(str(e)) from None
    one_line(f"wrote {private} (private, keep it secret) and {public} (public)", style=None)
    print(f"key id {key_id(load_public_key(public))}")
