"""`mffmoe calibrate`: fit a calibration of the ensemble score on labelled data and keep it next to the
weights (`mffmoe.calibration`), where `analyze` and `evaluate` find it. scikit-learn is imported inside."""
from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from mffmoe.cli.checks import check_options
from mffmoe.cli.options import (
    AllowMissingEmaOpt,
    BatchOpt,
    CropOpt,
    DeviceOpt,
    EngineOpt,
    FramesOpt,
    ReportFormat,
    WeightsOpt,
)
from mffmoe.cli.output import err, fail, number, one_line, progress
from mffmoe.config import DEFAULT_BATCH_SIZE, DEFAULT_DEVICE, DEFAULT_ENGINE, DEFAULT_FRAMES, DEFAULT_POOLING
from mffmoe.errors import MFFMoEError


class Method(StrEnum):
    temperature = "temperature"
    platt = "platt"
    isotonic = "isotonic"


class Fusion(StrEnum):
    mean = "mean"
    learned = "learned"


def summary_lines(record: dict[str, Any]) -> list[str]:
    """What the table report prints: what was fitted on what, the cross-validated metrics, the fusion."""
    cv = record["cv"]
    b, a = cv["before"], cv["after"]
    lines = [f"calibration {record['name']}: {record['method']}, {record['fusion']} fusion, crop {record['crop']}, "
             f"{record['n_real']} real + {record['n_fake']} fake ({record['n_failed']} failed), "
             f"{cv['folds']}-fold cross-validation",
             f"out-of-fold: ECE {number(b['ece'])} -> {number(a['ece'])}, Brier {number(b['brier'])} -> "
             f"{number(a['brier'])}, log loss {number(b['log_loss'])} -> {number(a['log_loss'])}, "
             f"AUC {number(b['auc'])} -> {number(a['auc'])} ({cv['ece_bins']} ECE bins)"]
    f = cv.get("fusion")
    if f:
        lines.append(f"fusion: learned AUC {number(f['learned_auc'])} vs mean AUC {number(f['mean_auc'])}: "
                     f"{f['note']}")
    return lines


def calibrate(
    data: Annotated[str, typer.Option(
        "--data", "-d", help="Folder with real/ and fake/, or a CSV path,label.")],
    weights: WeightsOpt = None,
    method: Annotated[Method, typer.Option(
        "--method", help="temperature: one parameter on the logit; platt: two; isotonic: a monotone step "
                         "function.")] = Method.temperature,
    fusion: Annotated[Fusion, typer.Option(
        "--fusion", help="mean: calibrate the spec's score; learned: stack the experts' logits (logistic "
                         "regression) first.")] = Fusion.mean,
    crop: CropOpt = None,
    frames: FramesOpt = DEFAULT_FRAMES,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.table,
    device: DeviceOpt = DEFAULT_DEVICE,
    engine: EngineOpt = DEFAULT_ENGINE,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    allow_missing_ema: AllowMissingEmaOpt = False,
) -> None:
    """Fit a calibration of the ensemble score on labelled data, cross-validated, and write it next to the weights.

    Files are scored as `evaluate` scores them, in `--crop` mode (default: what the weights were trained
    on); the calibration applies to `analyze` calls in that mode. `score` never changes: results gain
    `calibrated_score` and name the calibration. Written to <weights>/mffmoe-calibration.json, or under
    the cache folder when the weights' folder is not writable. Exits 1 when some files failed (they are
    listed and left out of the fit)."""
    from mffmoe.calibration import calibrate_scores, data_hash, data_root, save_calibration
    from mffmoe.config import DetectorConfig
    from mffmoe.datasets import read_dataset
    from mffmoe.engine.registry import one_shot_options
    from mffmoe.evaluation.evaluate import score_items
    from mffmoe.inference.detector import Detector

    try:
        config = DetectorConfig(weights=weights, allow_missing_ema=allow_missing_ema, device=device,
                                engine=engine, batch_size=batch_size, frames=frames, crop=crop,
                                engine_options=one_shot_options(engine))  # a job that ends: experts streamed
        check_options(config.engine, config.device)
        items = read_dataset(data)
        detector = Detector.from_config(config)
    except MFFMoEError as e:
        raise fail(str(e)) from None
    try:
        with progress(err, info=True) as bar:
            task = bar.add_task("files", total=len(items), info="")
            scores = score_items(detector, items, frames=frames,
                                 progress=lambda d, t: bar.update(task, completed=d))
        info = detector.info
        cal = calibrate_scores(scores, info.roster, method.value, fusion.value, crop=detector.crop,
                               fingerprint=info.fingerprint(), weights=str(info.source), data=str(data),
                               data_hash=data_hash(items, data_root(data)), frames=frames, pooling=DEFAULT_POOLING)
        path = save_calibration(cal, info)
    except MFFMoEError as e:
        raise fail(str(e)) from None
    finally:
        detector.close()
    record = {**cal.to_dict(), "path": str(path)}
    if fmt is ReportFormat.json:
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
    else:
        for line in summary_lines(record):
            one_line(line, None)
        one_line(f"written: {path}", None)
    for s in scores:
        if s.error is not None:
            one_line(f"failed: {s.path}: {s.error.type}: {s.error.message}")
    if cal.n_failed:
        one_line(f"{cal.n_failed} of {len(scores)} file(s) failed and are not in the fit")
        raise typer.Exit(1)
