"""The field's metrics: checked against hand-worked values, brute force, and scikit-learn directly."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from mffmoe.evaluation.metrics import auc_or_none, binary_metrics, eer, threshold_at_fpr


def brute_force_eer(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """Every candidate threshold (each score, and +inf), rule FAKE iff score >= t, counted by hand."""
    best = None
    for t in sorted(set(s.tolist()) | {np.inf}, reverse=True):
        fpr = np.mean(s[y == 0] >= t)
        fnr = np.mean(s[y == 1] < t)
        if best is None or abs(fnr - fpr) < best[0] - 1e-15:
            best = (abs(fnr - fpr), fpr, t)
    return best[1], best[2]


def test_textbook_example():
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    m = binary_metrics(y, s, threshold=0.5)
    assert m["auc"] == pytest.approx(0.75)
    assert m["ap"] == pytest.approx((1 / 1 + 2 / 3) / 2)   # precision at each fake's rank
    assert m["accuracy"] == pytest.approx(0.75)             # 0.35 is a missed fake
    assert (m["n"], m["n_real"], m["n_fake"]) == (4, 2, 2)
    # at 0.4: one real of two flagged (FPR 0.5), one fake of two missed (FNR 0.5)
    assert m["eer"] == pytest.approx(0.5) and m["eer_threshold"] == pytest.approx(0.4)
    # At FPR <= 1% only the 0.8 fake is caught, at threshold 0.8.
    assert m["threshold_at_fpr"] == pytest.approx(0.8) and m["tpr_at_threshold"] == pytest.approx(0.5)
    assert m["fpr_at_threshold"] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(2)  # rounding makes ties
    m = binary_metrics(y, s, threshold=0.42, target_fpr=0.05)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, s >= 0.42), abs=1e-12)
    e, t = brute_force_eer(y, s)
    assert m["eer"] == pytest.approx(e, abs=1e-12) and m["eer_threshold"] == pytest.approx(t)
    thr, fpr, tpr = threshold_at_fpr(y, s, 0.05)
    assert fpr <= 0.05
    assert fpr == pytest.approx(np.mean(s[y == 0] >= thr)) and tpr == pytest.approx(np.mean(s[y == 1] >= thr))
    lower = s[s < thr]
    if len(lower):  # the next lower threshold would break the FPR target: thr is the best one
        assert np.mean(s[y == 0] >= lower.max()) > 0.05


def test_one_class_gives_none_not_a_number():
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["auc"] is m["ap"] is m["eer"] is m["threshold_at_fpr"] is None
    assert "both" in m["note"]
    assert auc_or_none([0, 0], [0.1, 0.2]) is None


def test_eer_of_a_perfect_separation_is_zero():
    e, t = eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert e == 0.0 and 0.2 < t <= 0.8


@pytest.mark.parametrize("labels,scores", [([0, 1], [0.5]), ([0, 2], [0.1, 0.2]), ([0, 1], [0.1, np.nan])])
def test_bad_inputs_raise(labels, scores):
    with pytest.raises(ValueError):
        binary_metrics(labels, scores)
