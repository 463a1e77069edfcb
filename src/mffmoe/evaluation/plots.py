"""ROC curves, score histograms and reliability diagrams as PNG files (matplotlib, headless; ROC and
reliability curves via scikit-learn)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mffmoe.evaluation.evaluate import ItemScore


def _axes(width: float, height: float) -> tuple[Any, Any]:
    """A headless figure and its axes (matplotlib imported on first use: evaluation without plots
    does not need it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _roc(path: Path, title: str, labels: Sequence[int], columns: dict[str, np.ndarray]) -> Path:
    from sklearn.metrics import RocCurveDisplay

    fig, ax = _axes(6, 6)
    for i, (name, scores) in enumerate(columns.items()):
        RocCurveDisplay.from_predictions(labels, scores, pos_label=1, name=name, ax=ax)
        ax.lines[-1].set_linewidth(2.5 if i == 0 else 1.0)  # the ensemble stands out
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set_title(title)
    ax.set_xlabel("false positive rate (real flagged FAKE)")
    ax.set_ylabel("true positive rate (fakes caught)")
    return _save(fig, path)


def _histogram(path: Path, title: str, labels: Sequence[int], scores: np.ndarray, metrics: dict[str, Any]) -> Path:
    y = np.asarray(labels)
    fig, ax = _axes(7, 4)
    bins = np.linspace(0.0, 1.0, 41).tolist()
    ax.hist(scores[y == 0], bins=bins, alpha=0.6, label=f"real (n={int((y == 0).sum())})", color="tab:green")
    ax.hist(scores[y == 1], bins=bins, alpha=0.6, label=f"fake (n={int((y == 1).sum())})", color="tab:red")
    ax.axvline(metrics["threshold"], color="k", linestyle="--", label=f"threshold {metrics['threshold']:.3g}")
    if metrics.get("eer_threshold") is not None:
        ax.axvline(metrics["eer_threshold"], color="tab:blue", linestyle=":",
                   label=f"EER threshold {metrics['eer_threshold']:.3g}")
    ax.set_xlabel("ensemble score P(fake)")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def _reliability(path: Path, labels: Sequence[int], columns: dict[str, np.ndarray]) -> Path:
    """Fraction fake against mean P(fake) in the ECE's 15 equal-width bins, per column."""
    from sklearn.calibration import CalibrationDisplay

    from mffmoe.evaluation.metrics import ECE_BINS, ece

    fig, ax = _axes(6, 6)
    for name, probs in columns.items():
        CalibrationDisplay.from_predictions(labels, probs, n_bins=ECE_BINS, strategy="uniform", pos_label=1,
                                            name=f"{name} (ECE {ece(labels, probs):.3f})", ax=ax)
    ax.set_title("Reliability per file")
    ax.set_xlabel("mean P(fake) in bin")
    ax.set_ylabel("fraction fake in bin")
    return _save(fig, path)


def write_plots(report: dict[str, Any], scores: Sequence[ItemScore], out: str | os.PathLike[str]) -> list[Path]:
    """roc.png + hist.png + reliability.png (per file; the reliability diagram shows the calibrated
    score too when the weights' calibration was applied), and roc_frames.png + hist_frames.png when videos
    were scored. ROC and reliability curves need both classes: without them only the histograms are drawn."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    roster = report["roster"]
    ok = [s for s in scores if s.error is None]
    levels = [("", "per file", [s.label for s in ok], [(s.score, s.expert_scores) for s in ok], report)]
    if "frame_level" in report:
        videos = [s for s in ok if s.kind == "video"]
        levels.append(("_frames", "per video frame", [s.label for s in videos for _ in s.frames],
                       [(f.score, f.expert_scores) for s in videos for f in s.frames], report["frame_level"]))
    written = []
    for suffix, what, labels, rows, metrics in levels:
        if not rows:
            continue
        matrix = np.array([[s, *e] for s, e in rows], dtype=np.float64)
        if len(set(labels)) == 2:
            columns = {"ensemble": matrix[:, 0]}
            columns.update({f"{j}: {name}": matrix[:, j + 1] for j, name in enumerate(roster)})
            written.append(_roc(out / f"roc{suffix}.png", f"ROC {what}", labels, columns))
        written.append(_histogram(out / f"hist{suffix}.png", f"Scores {what}", labels, matrix[:, 0], metrics))
        if suffix == "" and len(set(labels)) == 2:
            curves = {"ensemble score": matrix[:, 0]}
            calibrated = [s.calibrated_score for s in ok]
            if all(c is not None for c in calibrated):
                curves["calibrated"] = np.array(calibrated, dtype=np.float64)
            written.append(_reliability(out / "reliability.png", labels, curves))
    return written
