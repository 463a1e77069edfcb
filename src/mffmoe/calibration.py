"""Calibration of the ensemble score on labelled data (`mffmoe calibrate`), and its use by the detector.

The spec's `score` (the mean of the experts' P(fake)) never changes; a calibration maps it (or a learned
fusion of the experts, see below) to `calibrated_score`, a probability that matches how often such items
are fake on the data it was fitted on.

Methods (scikit-learn fits them):
- `temperature`: sigmoid(logit(score) / T), one parameter (a logistic regression without intercept on
  the logit; T = 1 / its slope).
- `platt`: sigmoid(a * logit(score) + b), a logistic regression on the logit.
- `isotonic`: a monotone step function of the score (IsotonicRegression).

Fusion: `mean` calibrates the spec's score; `learned` fits a logistic regression over the experts'
logits (stacking) and calibrates its output. Both are cross-validated (stratified k-fold, k = 5 or
fewer on small sets): the record keeps the out-of-fold ECE, Brier score, log loss and AUC before and
after, and for `learned` its out-of-fold AUC against the plain mean's, saying which is better.

The record (`mffmoe-calibration.json`; `NAME.mffmoe-calibration.json` for a `NAME.safetensors` file) sits
next to the weights, or when that folder is not writable in
the cache folder (`$MFFMOE_CACHE_DIR`, see `mffmoe.engine.cache`) under the weights' fingerprint. It
names the method, its parameters, the fusion weights, the data (a SHA-256 over the sorted relative
paths, labels and file contents), the item counts, the date, the crop mode and the weights' fingerprint.
The detector applies it only to calls in the same crop mode, on the same weights (same fingerprint), with
every expert's score (not after an early exit); otherwise the result says why it was not applied.

`ece` is the expected calibration error of P(fake) over 15 equal-width bins of [0, 1] (the
last one closed): the item-weighted mean, over non-empty bins, of |fraction fake - mean P(fake)| (the
calibration of P(fake) itself, as the reliability diagram draws it; not the "top-label" ECE of
max(p, 1 - p)). `brier` is the mean squared error of P(fake) against the label (scikit-learn's).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from mffmoe.errors import DatasetError

if TYPE_CHECKING:
    from mffmoe.datasets import LabeledPath
    from mffmoe.model.info import CheckpointInfo

CALIBRATION_FILE = "mffmoe-calibration.json"
FORMAT_VERSION = 1
METHODS = ("temperature", "platt", "isotonic")
FUSIONS = ("mean", "learned")
MAX_FOLDS = 5
ECE_BINS = 15
_EPS = 1e-6
_UNREGULARISED = 1e6  # C of the one- and two-parameter logistic fits: a plain maximum-likelihood fit


# -- metrics ---------------------------------------------------------------------------------------
def logit(p: ArrayLike) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def ece(labels: ArrayLike, probs: ArrayLike, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of P(fake) (see the module docstring)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("ECE of no items")
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        sel = bins == b
        total += sel.sum() * abs(y[sel].mean() - p[sel].mean())
    return float(total / len(y))


def brier(labels: ArrayLike, probs: ArrayLike) -> float:
    """Brier score of P(fake): mean (P(fake) - label)^2 (scikit-learn's)."""
    from sklearn.metrics import brier_score_loss

    return float(brier_score_loss(np.asarray(labels), np.asarray(probs, dtype=np.float64), pos_label=1))


def probability_metrics(labels: ArrayLike, probs: ArrayLike) -> dict[str, Any]:
    """ECE, Brier score, log loss and AUC (None with one class) of P(fake)."""
    from sklearn.metrics import log_loss, roc_auc_score

    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    both = len(np.unique(y)) == 2
    return {"ece": ece(y, p), "brier": brier(y, p),
            "log_loss": float(log_loss(y, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1])),
            "auc": float(roc_auc_score(y, p)) if both else None}


# -- fitting ---------------------------------------------------------------------------------------
def _fit_map(method: str, s: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The parameters of `method` mapping fused P(fake) `s` to calibrated P(fake), fitted on labels `y`."""
    from sklearn.linear_model import LogisticRegression

    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
        return {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}
    z = logit(s)[:, None]
    lr = LogisticRegression(C=_UNREGULARISED, fit_intercept=method == "platt", max_iter=1000).fit(z, y)
    a = float(lr.coef_[0, 0])
    if method == "temperature":
        return {"a": a, "temperature": (1.0 / a) if a > 0 else None}
    return {"a": a, "b": float(lr.intercept_[0])}


def _apply_map(method: str, params: dict[str, Any], s: np.ndarray) -> np.ndarray:
    if method == "isotonic":
        return np.interp(s, params["x"], params["y"])
    return _sigmoid(params["a"] * logit(s) + params.get("b", 0.0))


def _fit_fusion(experts: np.ndarray, y: np.ndarray) -> tuple[list[float], float]:
    """Stacking: a (lightly regularised) logistic regression over the experts' logits."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1.0, max_iter=1000).fit(logit(experts), y)
    return [float(w) for w in lr.coef_[0]], float(lr.intercept_[0])


def _fuse(weights: Sequence[float], bias: float, experts: np.ndarray) -> np.ndarray:
    return _sigmoid(logit(experts) @ np.asarray(weights, dtype=np.float64) + bias)


@dataclass
class Calibration:
    """A fitted calibration (the JSON record's fields)."""
    method: str
    fusion: str
    params: dict[str, Any]
    crop: str
    roster: list[str]
    fusion_weights: list[float] | None = None
    fusion_bias: float | None = None
    fingerprint: str | None = None            # the weights' (CheckpointInfo.fingerprint)
    weights: str | None = None                # where they were
    data: str | None = None                   # the labelled set given
    data_hash: str | None = None
    n_real: int = 0
    n_fake: int = 0
    n_failed: int = 0
    fitted: str = ""                          # ISO 8601, UTC
    frames: int | None = None
    pooling: str | None = None
    cv: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    @property
    def name(self) -> str:
        """How results name it: method (+ fusion), fit date, data hash prefix."""
        what = self.method if self.fusion == "mean" else f"{self.method}+learned"
        return f"{what} {self.fitted[:10]} data:{(self.data_hash or '?')[:12]}"

    def fused(self, scores: ArrayLike, experts: ArrayLike) -> np.ndarray:
        """The score that is calibrated: the ensemble score (mean fusion) or the learned fusion's."""
        if self.fusion == "learned":
            assert self.fusion_weights is not None and self.fusion_bias is not None
            return _fuse(self.fusion_weights, self.fusion_bias, np.atleast_2d(np.asarray(experts, np.float64)))
        return np.atleast_1d(np.asarray(scores, dtype=np.float64))

    def apply(self, scores: ArrayLike, experts: ArrayLike) -> np.ndarray:
        """Calibrated P(fake) of items with ensemble `scores` (n,) and expert scores (n, experts)."""
        return np.clip(_apply_map(self.method, self.params, self.fused(scores, experts)), 0.0, 1.0)

    def apply_one(self, score: float, expert_scores: Sequence[float]) -> float:
        return float(self.apply([score], [list(expert_scores)])[0])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        cal = cls(**known)
        if cal.method not in METHODS or cal.fusion not in FUSIONS:
            raise ValueError(f"unknown method {cal.method!r} or fusion {cal.fusion!r}")
        if not isinstance(cal.roster, list) or not isinstance(cal.params, dict):
            raise ValueError("roster must be a list and params an object")
        try:  # a record that cannot map a score is refused here, not on the first analysis
            probe = cal.apply([0.25, 0.75], [[0.25] * len(cal.roster), [0.75] * len(cal.roster)])
        except (KeyError, TypeError, ValueError, IndexError, AssertionError) as e:
            raise ValueError(f"its parameters do not apply ({type(e).__name__}: {e})") from None
        if not np.isfinite(probe).all():
            raise ValueError("its parameters give no finite probability")
        return cal


def _folds(y: np.ndarray) -> int:
    n_min = int(min((y == 0).sum(), (y == 1).sum()))
    if n_min < 2:
        raise DatasetError(f"calibration needs at least 2 real and 2 fake scored items, got {int((y == 0).sum())} "
                           f"real and {int((y == 1).sum())} fake")
    return min(MAX_FOLDS, n_min)


def fit(labels: ArrayLike, scores: ArrayLike, experts: ArrayLike, method: str = "temperature",
        fusion: str = "mean", seed: int = 0) -> tuple[dict[str, Any], list[float] | None, float | None,
                                                      dict[str, Any]]:
    """Fit `method` (and the `learned` fusion) on all items; cross-validate the whole fit.
    Returns (params, fusion weights, fusion bias, cross-validation report)."""
    from sklearn.model_selection import StratifiedKFold

    if method not in METHODS:
        raise DatasetError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    if fusion not in FUSIONS:
        raise DatasetError(f"unknown fusion {fusion!r}; choose from {', '.join(FUSIONS)}")
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    e = np.asarray(experts, dtype=np.float64).reshape(len(y), -1)
    k = _folds(y)
    oof = np.zeros(len(y))
    oof_fused = s.copy()
    for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(s, y):
        if fusion == "learned":
            w, b = _fit_fusion(e[train], y[train])
            fused_train, oof_fused[test] = _fuse(w, b, e[train]), _fuse(w, b, e[test])
        else:
            fused_train = s[train]
        oof[test] = _apply_map(method, _fit_map(method, fused_train, y[train]), oof_fused[test])
    cv: dict[str, Any] = {"folds": k, "ece_bins": ECE_BINS, "before": probability_metrics(y, s),
                          "after": probability_metrics(y, np.clip(oof, 0.0, 1.0))}
    weights: list[float] | None = None
    bias: float | None = None
    fused = s
    if fusion == "learned":
        weights, bias = _fit_fusion(e, y)
        fused = _fuse(weights, bias, e)
        mean_auc, learned_auc = cv["before"]["auc"], probability_metrics(y, oof_fused)["auc"]
        better = "learned" if learned_auc > mean_auc else "mean" if learned_auc < mean_auc else "tie"
        cv["fusion"] = {"mean_auc": mean_auc, "learned_auc": learned_auc, "better": better,
                        "note": {"learned": "the learned fusion ranks better than the plain mean (out-of-fold AUC)",
                                 "tie": "the learned fusion ranks as well as the plain mean (out-of-fold AUC)",
                                 "mean": "the learned fusion is NOT better than the plain mean (out-of-fold AUC)"
                                 }[better]}
    return _fit_map(method, fused, y), weights, bias, cv


# -- data ------------------------------------------------------------------------------------------
def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return "unreadable"
    return h.hexdigest()


def data_hash(items: Sequence[LabeledPath], root: str | os.PathLike[str]) -> str:
    """SHA-256 over the sorted (path relative to `root`, label, file SHA-256) of the items."""
    entries = sorted((os.path.relpath(it.path, root), it.label, _file_hash(it.path)) for it in items)
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def data_root(source: str | os.PathLike[str]) -> Path:
    """What item paths are relative to in the data hash: the folder, or the CSV's folder."""
    source = Path(source)
    return source if source.is_dir() else source.parent


class Scored(Protocol):
    """A scored labelled item (`mffmoe.evaluation.evaluate.ItemScore`)."""
    @property
    def label(self) -> int: ...
    @property
    def score(self) -> float | None: ...
    @property
    def expert_scores(self) -> Sequence[float]: ...
    @property
    def error(self) -> object | None: ...


def calibrate_scores(scores: Sequence[Scored], roster: Sequence[str], method: str = "temperature",
                     fusion: str = "mean", *, crop: str, **record: Any) -> Calibration:
    """Fit a calibration on scored items (failed ones are counted and left out). `record`: the other
    Calibration fields (fingerprint, data, data_hash, frames, pooling, ...)."""
    ok = [s for s in scores if s.error is None and s.score is not None]
    y = np.array([s.label for s in ok], dtype=np.int64)
    params, weights, bias, cv = fit(y, [float(s.score or 0.0) for s in ok], [s.expert_scores for s in ok],
                                    method, fusion)
    return Calibration(method=method, fusion=fusion, params=params, crop=crop, roster=list(roster),
                       fusion_weights=weights, fusion_bias=bias, n_real=int((y == 0).sum()),
                       n_fake=int((y == 1).sum()), n_failed=len(scores) - len(ok),
                       fitted=datetime.now(UTC).isoformat(timespec="seconds"), cv=cv, **record)


# -- where it lives --------------------------------------------------------------------------------
def calibration_paths(info: CheckpointInfo) -> list[Path]:
    """Where a calibration of these weights may be, in lookup order: next to them, then the cache folder."""
    from mffmoe.engine.cache import user_cache_root, weights_dir

    wd = weights_dir(info)
    if wd is None:
        return []
    src = Path(info.source)  # a folder: DIR/mffmoe-calibration.json; a .safetensors file: NAME.mffmoe-calibration.json
    beside = wd / CALIBRATION_FILE if src.is_dir() else wd / f"{src.stem}.{CALIBRATION_FILE}"
    return [beside, user_cache_root() / info.fingerprint() / CALIBRATION_FILE]


def save_calibration(calibration: Calibration, info: CheckpointInfo) -> Path:
    """Write the record next to the weights, or in the cache folder when that is not writable."""
    from mffmoe.engine.cache import _writable, write_json
    from mffmoe.errors import CacheNotWritableError

    paths = calibration_paths(info)
    if not paths:
        raise DatasetError("random weights have no folder to keep a calibration in")
    for path in paths:
        if _writable(path.parent) and (not path.exists() or os.access(path, os.W_OK)):
            write_json(path, calibration.to_dict())
            return path
    raise CacheNotWritableError(f"cannot write the calibration: tried {[str(p) for p in paths]}; set "
                                f"MFFMOE_CACHE_DIR to a writable directory")


def load_calibration(info: CheckpointInfo) -> tuple[Calibration | None, str | None]:
    """The calibration of these weights, if any: (record, None) when it fits them, (record or None,
    why not) when one was found that does not (fitted on other weights, another roster, unreadable)."""
    from mffmoe.engine.cache import read_json

    problem: tuple[Calibration | None, str | None] = (None, None)
    for path in calibration_paths(info):
        if not path.exists():
            continue
        data = read_json(path)
        why: str | None
        try:
            cal = Calibration.from_dict(data) if data is not None else None
        except (TypeError, ValueError) as e:
            cal, why = None, f"{path}: not a calibration record ({e})"
        else:
            why = None if cal is not None else f"{path}: not a readable calibration record"
        if cal is not None:
            if cal.roster != list(info.roster):
                why = f"{path}: fitted for roster {cal.roster}, not these weights'"
            elif cal.fingerprint != info.fingerprint():
                why = (f"{path}: fitted on other weights (fingerprint {cal.fingerprint}, these are "
                       f"{info.fingerprint()}); rerun mffmoe calibrate")
            else:
                return cal, None
        if problem[1] is None:
            problem = (cal, why)
    return problem
