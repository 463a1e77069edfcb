"""`mffmoe export`: the ensemble as ONNX and/or OpenVINO graphs, then a calibration for `--engine auto`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mffmoe.cli.options import AllowMissingEmaOpt, ExportFormat, WeightsOpt
from mffmoe.cli.output import err, fail, one_line
from mffmoe.errors import MFFMoEError


def export(
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="onnx | openvino | all")] = ExportFormat.all,
    weights: WeightsOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also copy the artefacts here "
                                             "(one sub-directory per format).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Export again even if a cached export exists.")] = False,
    calibrate: Annotated[bool, typer.Option(
        "--calibrate/--no-calibrate", help="Check agreement with torch (1e-4) and time each engine, so that "
                                           "`--engine auto` can pick the fastest.")] = True,
    allow_missing_ema: AllowMissingEmaOpt = False,
) -> None:
    """Export the ensemble (one graph per expert, EMA folded, fp32) to ONNX and/or OpenVINO IR.

    Artefacts are cached next to the weights under .mffmoe-cache/<fingerprint>/ (or in
    ~/.cache/mffmoe when that directory is not writable), so the cost is paid once."""
    import mffmoe.engine.export as exporting
    from mffmoe.config import resolve_weights_dir
    from mffmoe.model.checkpoint import load_weights

    try:
        model, info = load_weights(resolve_weights_dir(weights), allow_missing_ema=allow_missing_ema)
        formats = list(exporting.FORMATS) if fmt is ExportFormat.all else [fmt.value]
        for name in formats:
            target = (out / name) if out is not None else None
            path = exporting.export(name, model, info, out=target, force=force)
            size = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
            err.print(f"{name}: {path} ({size / 1e6:.0f} MB)")
    except MFFMoEError as e:  # missing `engines` extra, cache not writable, bad weights
        raise fail(str(e)) from None
    if calibrate:
        from mffmoe.engine.calibrate import calibrate as run_calibration

        # every engine exported so far, so the record always compares them all
        record = run_calibration(model, info, log=lambda m: err.print(m, highlight=False))
        bad = [n for n, r in record["engines"].items() if not r["ok"]]
        if bad:
            one_line(f"not within 1e-4 of torch, so never picked by auto: {', '.join(bad)}", "yellow")
