"""The field's detection metrics (DeepfakeBench reports ACC, AUC, EER and AP), from scikit-learn.

Labels: 1 = fake (the positive class), 0 = real. Scores: P(fake). A prediction is FAKE iff
score >= threshold, the detector's rule. Metrics that need both classes are None (with a note) when
one class is absent, never a made-up number.

Calibration: `ece` and `brier` (defined in `mffmoe.calibration`, which the detector uses).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mffmoe.calibration import ECE_BINS, brier, ece
from mffmoe.config import DEFAULT_THRESHOLD

__all__ = ["DEFAULT_TARGET_FPR", "ECE_BINS", "auc_or_none", "binary_metrics", "brier", "ece", "eer", "threshold_at_fpr"]

DEFAULT_TARGET_FPR = 0.01


def _finite(value: float) -> float | None:
    """JSON has no infinity: roc_curve's first threshold (+inf, "flag nothing") becomes None."""
    value = float(value)
    return value if math.isfinite(value) else None


def eer(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """Equal error rate and the threshold where it occurs, from the ROC curve as DeepfakeBench does:
    the point where |FNR - FPR| is smallest; the EER is that point's FPR."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores, pos_label=1)
    idx = int(np.nanargmin(np.abs((1.0 - tpr) - fpr)))
    return float(fpr[idx]), float(thresholds[idx])


def threshold_at_fpr(labels: ArrayLike, scores: ArrayLike, target_fpr: float,
                     ) -> tuple[float, float, float]:
    """The lowest threshold (highest TPR) whose false-positive rate on real items is <= target_fpr.
    Returns (threshold, fpr, tpr) at that point."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores, pos_label=1, drop_intermediate=False)
    ok = np.flatnonzero(fpr <= target_fpr)  # fpr is non-decreasing; index 0 (threshold +inf) always qualifies
    idx = int(ok[-1])
    return float(thresholds[idx]), float(fpr[idx]), float(tpr[idx])


def binary_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float = DEFAULT_THRESHOLD,
                   target_fpr: float = DEFAULT_TARGET_FPR) -> dict[str, Any]:
    """ACC at `threshold`, AUC, EER (+ threshold), AP, the threshold at `target_fpr`, ECE and Brier score."""
    from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D and the same length, got {y.shape} and {s.shape}")
    if len(y) and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    n_fake = int(y.sum())
    out: dict[str, Any] = {"n": int(len(y)), "n_real": int(len(y) - n_fake), "n_fake": n_fake,
                           "threshold": float(threshold),
                           "accuracy": float(accuracy_score(y, s >= threshold)) if len(y) else None,
                           "auc": None, "ap": None, "eer": None, "eer_threshold": None,
                           "target_fpr": float(target_fpr), "threshold_at_fpr": None, "fpr_at_threshold": None,
                           "tpr_at_threshold": None, "note": None,
                           "ece": ece(y, s) if len(y) else None, "brier": brier(y, s) if len(y) else None}
    if n_fake == 0 or n_fake == len(y):
        out["note"] = "AUC, AP, EER and the FPR threshold need both real and fake items"
        return out
    e, e_thr = eer(y, s)
    t, t_fpr, t_tpr = threshold_at_fpr(y, s, target_fpr)
    out.update(auc=float(roc_auc_score(y, s)), ap=float(average_precision_score(y, s, pos_label=1)),
               eer=e, eer_threshold=_finite(e_thr), threshold_at_fpr=_finite(t), fpr_at_threshold=t_fpr,
               tpr_at_threshold=t_tpr)
    return out


def auc_or_none(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """ROC AUC, or None when only one class is present (validation logs use this)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels)
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)))
