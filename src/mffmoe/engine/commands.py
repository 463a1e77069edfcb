"""CLI commands of this package (registered by mffmoe.cli through COMMAND_MODULES): `mffmoe export`."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional, Sequence

import typer

from mffmoe.errors import ConfigError


class ExportFormat(str, Enum):
    onnx = "onnx"
    openvino = "openvino"
    all = "all"


def estimate_images(files: Sequence[Path], frames: int) -> int:
    """Images a job will run through the model: 1 per image, `frames` per video (by content)."""
    from mffmoe.errors import MFFMoEError
    from mffmoe.media.probe import MediaKind, probe_kind

    n = 0
    for f in files:
        try:
            n += frames if probe_kind(f) is MediaKind.VIDEO else 1
        except MFFMoEError:
            continue
    return max(1, n)


def analyze_engine_options(engine: str, files: Sequence[Path], frames: int, autocast: str | None = None) -> dict:
    """Engine options for a CLI `analyze` job. A single input file runs lean (torch weights leave memory
    layer by layer, experts one after another), and `auto` is told the job's size so that it weighs
    start-up against per-image time (see mffmoe.engine.auto)."""
    from mffmoe.engine import ALIASES
    name = ALIASES.get(engine, engine)
    options: dict = {}
    if name in ("torch", "auto") and len(files) == 1:
        options["lean"] = True
    if name == "auto":
        options["images"] = estimate_images(files, frames)
    if autocast:
        if name not in ("torch", "auto"):
            raise ConfigError(f"--autocast is for the torch engine on CUDA, not {name}")
        options["autocast"] = autocast
    return options


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `mffmoe` app."""

    @app.command("export")
    def export_cmd(
        fmt: ExportFormat = typer.Option(ExportFormat.all, "--format", "-f", help="onnx | openvino | all"),
        weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Weights dir or .safetensors file "
                                               "(default: $MFFMOE_WEIGHTS, then ./models/MFF-MoE-V1)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also copy the artefacts here "
                                           "(one sub-directory per format)."),
        force: bool = typer.Option(False, "--force", help="Export again even if a cached export exists."),
        calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate",
                                       help="Check agreement with torch (1e-4) and time each engine, so that "
                                            "`--engine auto` can pick the fastest."),
        allow_missing_ema: bool = typer.Option(False, "--allow-missing-ema"),
    ) -> None:
        """Export the ensemble (one graph per expert, EMA folded, fp32) to ONNX and/or OpenVINO IR.

        Artefacts are cached next to the weights under .mffmoe-cache/<fingerprint>/ (or in
        ~/.cache/mffmoe when that directory is not writable), so the cost is paid once."""
        from mffmoe.cli import err, fail
        from mffmoe.config import resolve_weights_dir
        from mffmoe.engine.export import FORMATS, export
        from mffmoe.errors import MFFMoEError
        from mffmoe.model.checkpoint import load_weights

        try:
            model, info = load_weights(resolve_weights_dir(weights), allow_missing_ema=allow_missing_ema)
        except MFFMoEError as e:
            raise fail(str(e)) from None
        formats = list(FORMATS) if fmt is ExportFormat.all else [fmt.value]
        for name in formats:
            target = (out / name) if out is not None else None
            try:
                path = export(name, model, info, out=target, force=force)
            except ImportError as e:
                raise fail(f"{name} export needs the `engines` extra (pip install 'mffmoe[engines]'): {e}") from None
            except PermissionError as e:
                raise fail(str(e)) from None
            size = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
            err.print(f"{name}: {path} ({size / 1e6:.0f} MB)")
        if calibrate:
            from mffmoe.engine.auto import calibrate as run_calibration
            # every engine exported so far, so the record always compares them all
            record = run_calibration(model, info, log=lambda m: err.print(m, highlight=False))
            bad = [n for n, r in record["engines"].items() if not r["ok"]]
            if bad:
                err.print(f"[yellow]not within 1e-4 of torch, so never picked by auto:[/] {', '.join(bad)}")
