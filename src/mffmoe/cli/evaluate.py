"""`mffmoe evaluate`: metrics on labelled data, scored by the same detector `analyze` builds.
scikit-learn and matplotlib are imported inside the command."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mffmoe.cli.checks import check_options
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
    MinFaceOpt,
    PoolingOpt,
    ReportFormat,
    ThresholdOpt,
    WeightsOpt,
)
from mffmoe.cli.output import err, fail, number, one_line, progress
from mffmoe.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_ENGINE,
    DEFAULT_FRAMES,
    DEFAULT_POOLING,
    DEFAULT_THRESHOLD,
)
from mffmoe.errors import ConfigError, MFFMoEError


def print_metrics(report: dict[str, Any], console: Console) -> None:
    """One table per level (per file, then video and frame level when there are videos)."""
    from rich.table import Table

    levels = [("per file", report)]
    levels += [(name.replace("_", " "), report[name]) for name in ("video_level", "frame_level") if name in report]
    for title, m in levels:
        fpr = m["target_fpr"]
        table = Table(title=f"{title}: {m['n_real']} real, {m['n_fake']} fake", header_style="bold",
                      title_justify="left")
        for col in ("model", f"ACC@{m['threshold']:.3g}", "AUC", "EER", "EER thr", "AP",
                    f"thr@FPR{fpr:g}", f"TPR@FPR{fpr:g}"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for name, row in [("ensemble", m)] + [(f"{e['index']}: {e['name']}", e) for e in m["experts"]]:
            table.add_row(name, number(row["accuracy"]), number(row["auc"]), number(row["eer"]),
                          number(row["eer_threshold"]), number(row["ap"]), number(row["threshold_at_fpr"]),
                          number(row["tpr_at_threshold"]))
        console.print(table)
        if m.get("note"):
            console.print(f"note: {m['note']}", highlight=False)


def crop_line(report: dict[str, Any]) -> str:
    """"crop: faces (margin 1.3, ...; 2 file(s) without a face, scored whole)" for the table report."""
    line = f"crop: {report['crop']}"
    o = report.get("face_options")
    if o:
        line += (f" (margin {o['face_margin']:g}, align {'on' if o['align'] else 'off'}, min face {o['min_face']}, "
                 f"face pooling {o['face_pooling']}; {report['n_no_face']} file(s) without a face, scored whole)")
    return line


def calibration_line(report: dict[str, Any]) -> str:
    """"calibration temperature ...: ECE 0.21 -> 0.04, Brier 0.15 -> 0.11 (per file, N files)", or why not."""
    c = report.get("calibration")
    if c is None:
        return (f"ECE {number(report['ece'])}, Brier {number(report['brier'])} (per file; no calibration next to "
                f"the weights: mffmoe calibrate fits one)")
    if not c["applied"]:
        return f"calibration {c['name'] or ''} not applied: {c['note']}"
    b, a = c["before"], c["after"]
    return (f"calibration {c['name']}: ECE {number(b['ece'])} -> {number(a['ece'])}, Brier {number(b['brier'])} -> "
            f"{number(a['brier'])}, log loss {number(b['log_loss'])} -> {number(a['log_loss'])} (per file, "
            f"{c['n']} files, {c['ece_bins']} ECE bins)")


def evaluate(
    data: Annotated[str, typer.Option(
        "--data", "-d", help="Folder with real/ and fake/, or a CSV path,label.")],
    weights: WeightsOpt = None,
    frames: FramesOpt = DEFAULT_FRAMES,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.table,
    scores_out: Annotated[Path, typer.Option(
        "--scores", help="Per-file scores CSV (per-frame scores of videos go to <name>_frames.csv "
                         "beside it).")] = Path("scores.csv"),
    plots: Annotated[Path | None, typer.Option(
        "--plots", help="Write ROC, histogram and reliability-diagram PNGs here.")] = None,
    threshold: ThresholdOpt = DEFAULT_THRESHOLD,
    fpr: Annotated[float, typer.Option(
        "--fpr", min=0.0, max=1.0, help="Target false-positive rate for the reported operating "
                                        "threshold.")] = 0.01,
    pooling: PoolingOpt = DEFAULT_POOLING,
    device: DeviceOpt = DEFAULT_DEVICE,
    engine: EngineOpt = DEFAULT_ENGINE,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    allow_missing_ema: AllowMissingEmaOpt = False,
    crop: CropOpt = None,
    face_margin: FaceMarginOpt = None,
    align: AlignOpt = None,
    face_pooling: FacePoolingOpt = "max",
    min_face: MinFaceOpt = None,
) -> None:
    """Score labelled data: ACC, AUC, EER, AP for the ensemble and each expert (frame and video level for videos).

    Files are scored in `--crop` mode (default: what the weights were trained on), so in faces mode on
    the same face crops training and `analyze` use; the report says which mode was used.
    ECE and Brier score are reported for the score, and before and after the weights' calibration when
    they have one (`mffmoe calibrate`).
    Exits 1 when some files failed (they are listed and left out of the metrics)."""
    from mffmoe.config import DetectorConfig
    from mffmoe.datasets import read_dataset
    from mffmoe.engine.registry import one_shot_options
    from mffmoe.evaluation.evaluate import crop_report, score_items, summarize, write_scores
    from mffmoe.inference.detector import Detector

    try:
        config = DetectorConfig(weights=weights, allow_missing_ema=allow_missing_ema, device=device, engine=engine,
                                batch_size=batch_size, threshold=threshold, frames=frames, pooling=pooling,
                                crop=crop, face_pooling=face_pooling, face_margin=face_margin, align=align,
                                min_face=min_face,
                                engine_options=one_shot_options(engine))  # a job that ends: experts streamed
        check_options(config.engine, config.device)
        if scores_out.is_dir():
            raise ConfigError(f"--scores {scores_out}: is a directory; give a CSV file name")
        if plots is not None and plots.exists() and not plots.is_dir():
            raise ConfigError(f"--plots {plots}: is a file, not a directory")
        items = read_dataset(data)
        detector = Detector.from_config(config)
    except MFFMoEError as e:
        raise fail(str(e)) from None
    with progress(err, info=True) as bar:
        task = bar.add_task("files", total=len(items), info="")
        scores = score_items(detector, items, frames=frames, pooling=pooling,
                             progress=lambda d, t: bar.update(task, completed=d))
    report = summarize(scores, detector.info.roster, threshold, fpr)
    report["weights"] = detector.info.source
    report.update(crop_report(detector, scores))
    detector.close()
    report["scores_csv"] = [str(p) for p in write_scores(scores, scores_out, detector.info.roster, threshold)]
    if plots is not None:
        from mffmoe.evaluation.plots import write_plots

        report["plots"] = [str(p) for p in write_plots(report, scores, plots)]
    if fmt is ReportFormat.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        print_metrics(report, Console(width=160))
        one_line(crop_line(report), None)
        one_line(calibration_line(report), None)
        one_line(f"scores: {', '.join(report['scores_csv'])}" + (f"; plots: {plots}" if plots is not None else ""),
                 None)
    for f in report["failures"]:
        one_line(f"failed: {f['path']}: {f['error']['type']}: {f['error']['message']}")
    if report["n_failed"]:
        one_line(f"{report['n_failed']} of {report['n_items']} file(s) failed and are not in the metrics")
        raise typer.Exit(1)
