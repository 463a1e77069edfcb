"""Evaluation on labelled data, through the detector itself, so every score equals `mffmoe analyze`'s.

Levels: the top-level metrics use one score per file (an image's score, a video's pooled score), as
`analyze` reports them. When the data holds videos, `video_level` (the videos only) and `frame_level`
(every scored frame of those videos, labelled as its video) are added, as DeepfakeBench reports
them. Each level has the ensemble's metrics and each expert's (ECE and Brier score among them).
When the weights have a calibration (`mffmoe calibrate`), `calibration` compares the per-file ECE, Brier
score, log loss and AUC before and after it (or says why it was not applied). Files that fail are listed, kept out
of the metrics, and counted (`n_failed`).

Crop mode: items are scored through the detector in its crop mode (or the one `score_items` is given), so
in faces/auto mode on the same face crops `analyze` scores and training cut. The report's `crop` says
which mode was used, `face_options` the crop settings, `n_no_face` how many files were scored on the
whole frame because no face was found. Unless given, the face settings default to what the weights
were trained with (their manifest; `DetectorConfig.with_trained`), like the crop mode itself.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mffmoe.config import DEFAULT_THRESHOLD, DetectorConfig
from mffmoe.datasets import LabeledPath
from mffmoe.errors import ErrorInfo, MFFMoEError
from mffmoe.evaluation.metrics import DEFAULT_TARGET_FPR, ECE_BINS, binary_metrics
from mffmoe.results import VideoAnalysisResult

if TYPE_CHECKING:
    from mffmoe.inference.detector import Detector


@dataclass
class FrameScore:
    frame_index: int
    timestamp: float
    score: float
    expert_scores: list[float]


@dataclass
class ItemScore:
    path: str
    label: int
    kind: str | None = None                   # "image" | "video"; None when the file failed
    score: float | None = None
    expert_scores: list[float] = field(default_factory=list)
    frames: list[FrameScore] = field(default_factory=list)
    error: ErrorInfo | None = None
    crop: str | None = None                   # what was scored: "frame" or "faces" (None when the file failed)
    in_scope: bool | None = None              # faces/auto modes: False when no face was found
    calibrated_score: float | None = None     # the weights' calibration applied (`mffmoe calibrate`)
    calibration: str | None = None            # its name (set when one was found, applied or not)
    calibration_note: str | None = None       # why it was not applied


def score_items(detector: Detector, items: Sequence[LabeledPath], frames: int | None = None,
                pooling: str | None = None, progress: Callable[[int, int], None] | None = None,
                crop: str | None = None) -> list[ItemScore]:
    """Run `detector.analyze_many` over the items (input order kept; failures recorded, not raised), in
    crop mode `crop` (None: the detector's)."""
    out: list[ItemScore] = []
    labels = [it.label for it in items]
    results = detector.analyze_many([it.path for it in items], frames=frames, pooling=pooling, crop=crop)
    for n, (label, (path, result)) in enumerate(zip(labels, results, strict=True), 1):
        if isinstance(result, MFFMoEError):
            out.append(ItemScore(path, label, error=ErrorInfo.of(result)))
        else:
            frames_ = [FrameScore(f.frame_index, f.timestamp, f.score, list(f.expert_scores or []))
                       for f in (result.frame_predictions if isinstance(result, VideoAnalysisResult) else [])]
            cal = result.calibration
            out.append(ItemScore(path, label, result.media_type, result.score, list(result.expert_scores),
                                 frames_, crop=result.crop,  # in_scope: whether a face was found
                                 in_scope=False if "no_face" in result.scope_reasons else
                                 (True if result.crop == "faces" else None),
                                 calibrated_score=result.calibrated_score, calibration=cal.name if cal else None,
                                 calibration_note=cal.note if cal else None))
        if progress:
            progress(n, len(items))
    return out


def crop_report(detector: Detector, scores: Sequence[ItemScore], crop: str | None = None) -> dict[str, Any]:
    """The report's crop fields: the mode used (`crop`, None: the detector's), its face settings, and how
    many files had no face (scored whole)."""
    mode = detector.crop if crop is None else crop
    out: dict[str, Any] = {"crop": mode}
    finder = detector.finder_for(mode)
    if finder is not None:
        out["face_options"] = {"face_margin": finder.margin, "align": finder.align, "min_face": finder.min_face,
                               "max_faces": finder.max_faces, "face_pooling": detector.face_pooling}
        out["n_no_face"] = sum(1 for s in scores if s.error is None and s.in_scope is False)
    return out


def _level(labels: Sequence[int], scores: np.ndarray, roster: Sequence[str], threshold: float,
           target_fpr: float) -> dict[str, Any]:
    """Ensemble metrics (scores[:, 0]) plus each expert's (scores[:, 1:])."""
    m = binary_metrics(labels, scores[:, 0], threshold, target_fpr)
    m["experts"] = [{"index": j, "name": name, **binary_metrics(labels, scores[:, j + 1], threshold, target_fpr)}
                    for j, name in enumerate(roster)]
    return m


def _matrix(rows: Sequence[tuple[float | None, Sequence[float]]], n_experts: int) -> np.ndarray:
    return np.array([[s, *e] for s, e in rows], dtype=np.float64).reshape(-1, 1 + n_experts)


def summarize(scores: Sequence[ItemScore], roster: Sequence[str], threshold: float = DEFAULT_THRESHOLD,
              target_fpr: float = DEFAULT_TARGET_FPR) -> dict[str, Any]:
    """The evaluation report (a JSON-able dict; see the module docstring for the levels)."""
    ok = [s for s in scores if s.error is None]
    n_e = len(roster)
    report: dict[str, Any] = {"roster": list(roster), "n_items": len(scores), "n_failed": len(scores) - len(ok)}
    report.update(_level([s.label for s in ok], _matrix([(s.score, s.expert_scores) for s in ok], n_e),
                         roster, threshold, target_fpr))
    videos = [s for s in ok if s.kind == "video"]
    if videos:
        report["video_level"] = _level([s.label for s in videos],
                                       _matrix([(s.score, s.expert_scores) for s in videos], n_e),
                                       roster, threshold, target_fpr)
        frame_rows = [(f.score, f.expert_scores) for s in videos for f in s.frames]
        frame_labels = [s.label for s in videos for _ in s.frames]
        report["frame_level"] = _level(frame_labels, _matrix(frame_rows, n_e), roster, threshold, target_fpr)
    report["calibration"] = calibration_report(ok)
    report["failures"] = [{"path": s.path, "error": s.error.to_dict()} for s in scores if s.error is not None]
    return report


def calibration_report(scores: Sequence[ItemScore]) -> dict[str, Any] | None:
    """ECE, Brier score, log loss and AUC per file before and after the weights' calibration (on the
    files it was applied to), or why it was not applied; None when the weights have none."""
    from mffmoe.calibration import probability_metrics

    cal = [s for s in scores if s.calibrated_score is not None]
    if cal:
        y = [s.label for s in cal]
        return {"name": cal[0].calibration, "applied": True, "n": len(cal), "ece_bins": ECE_BINS,
                "before": probability_metrics(y, np.array([s.score for s in cal], dtype=np.float64)),
                "after": probability_metrics(y, np.array([s.calibrated_score for s in cal], dtype=np.float64)),
                "note": None}
    found = next((s for s in scores if s.calibration is not None or s.calibration_note is not None), None)
    if found is None:
        return None
    return {"name": found.calibration, "applied": False, "n": 0, "note": found.calibration_note}


def write_scores(scores: Sequence[ItemScore], path: str | os.PathLike[str], roster: Sequence[str],
                 threshold: float) -> list[Path]:
    """Per-item scores to `path` (CSV); per-frame scores of videos to `<stem>_frames.csv` beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    experts = [f"expert_{j}" for j in range(len(roster))]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "kind", "score", "prediction", *experts, "frames_analyzed", "crop",
                    "error"])
        for s in scores:
            if s.error is not None:
                w.writerow([s.path, s.label, "", "", "", *[""] * len(experts), "", "",
                            f"{s.error.type}: {s.error.message}"])
                continue
            assert s.score is not None  # scored: no error
            w.writerow([s.path, s.label, s.kind, repr(s.score), "FAKE" if s.score >= threshold else "REAL",
                        *[repr(v) for v in s.expert_scores], len(s.frames) if s.kind == "video" else "",
                        s.crop or "", ""])
    written = [path]
    if any(s.frames for s in scores):
        frames_path = path.with_name(path.stem + "_frames.csv")
        with open(frames_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "frame_index", "timestamp", "score", *experts])
            for s in scores:
                for fr in s.frames:
                    w.writerow([s.path, s.label, fr.frame_index, repr(fr.timestamp), repr(fr.score),
                                *[repr(v) for v in fr.expert_scores]])
        written.append(frames_path)
    return written


def evaluate(data: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None, *,
             frames: int | None = None, threshold: float = DEFAULT_THRESHOLD, target_fpr: float = DEFAULT_TARGET_FPR,
             detector: Detector | None = None, crop: str | None = None,
             **detector_fields: Any) -> tuple[dict[str, Any], list[ItemScore]]:
    """Library entry point: score a `real/`+`fake/` folder or a CSV and compute the report. The detector
    is `detector`, or built from `weights`, `threshold` and the other DetectorConfig fields (face settings
    not given: the weights' trained ones). `crop`: the mode (None: the detector's default, i.e. what the
    weights were trained on)."""
    from mffmoe.datasets import read_dataset
    from mffmoe.inference.detector import Detector

    items = read_dataset(data)
    owned = detector is None
    if detector is None:  # face settings not given: the weights' trained ones (DetectorConfig.with_trained)
        detector = Detector.from_config(DetectorConfig(weights=weights, threshold=threshold, crop=crop,
                                                       **detector_fields))
        crop = None
    try:
        scores = score_items(detector, items, frames=frames, crop=crop)
        report = summarize(scores, detector.info.roster, threshold, target_fpr)
        report["weights"] = detector.info.source
        report.update(crop_report(detector, scores, crop))
    finally:
        if owned:
            detector.close()
    return report, scores
