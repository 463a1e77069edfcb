"""Early exit is exact: the label always equals the full ensemble's and the full score lies in the
reported interval; it stops as soon as the label is fixed, cheapest experts first."""
from __future__ import annotations

import numpy as np
import pytest

from mffmoe.engine.early_exit import EarlyExitEngine, decided, groups, interval, run_images
from mffmoe.pooling import get_pooling
from mffmoe.results import label


class TableEngine:
    """A stand-in engine whose per-expert P(fake) for image k is `table[k]`, where k is stored in the
    image's first pixel. It records every (expert, rows) call so tests can see what actually ran."""

    name = device = "table"

    def __init__(self, table: np.ndarray, costs=None, workers: int = 1) -> None:
        self.table = np.asarray(table, dtype=np.float64)
        self.roster = tuple(f"e{i}" for i in range(self.table.shape[1]))
        self.input_size = 4
        self.costs = list(costs) if costs is not None else [1.0] * self.table.shape[1]
        self.workers = workers
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def images(self, n: int | None = None) -> np.ndarray:
        n = len(self.table) if n is None else n
        x = np.zeros((n, 3, 4, 4), dtype=np.float32)
        x[:, 0, 0, 0] = np.arange(n, dtype=np.float32)
        return x

    def predict_experts(self, batch: np.ndarray, experts) -> np.ndarray:
        rows = np.asarray(batch)[:, 0, 0, 0].astype(np.int64)
        self.calls.append((tuple(experts), len(rows)))
        return self.table[np.ix_(rows, list(experts))]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.predict_experts(batch, range(len(self.roster)))


def test_interval_and_decision_rules():
    probs = np.array([[1.0, 1.0, 1.0, 1.0, np.nan, np.nan, np.nan],
                      [0.0, 0.0, 0.0, 0.0, np.nan, np.nan, np.nan],
                      [1.0, 1.0, 1.0, 0.5, np.nan, np.nan, np.nan]])
    low, high = interval(probs)
    assert np.allclose(low, [4 / 7, 0, 3.5 / 7]) and np.allclose(high, [1, 3 / 7, 6.5 / 7])
    # low exactly at the threshold would fix FAKE, but exact ties are left to the remaining experts (a
    # 1e-12 margin guards against summation-order rounding), so only the first two are decided
    assert decided(low, high, 0.5).tolist() == [True, True, False]
    assert decided(low, high, 0.5 - 1e-9).tolist() == [True, True, True]
    # high exactly at the threshold: the rest could all be 1 -> score == threshold -> FAKE; not fixed
    low, high = interval(np.array([[0.5, 0.0, np.nan]]))
    assert high[0] == pytest.approx(0.5) and not decided(low, high, high[0])[0]


def test_groups_run_cheapest_first():
    assert groups([5.0, 1.0, 3.0, 1.0], 1) == [[1], [3], [2], [0]]
    assert groups([5.0, 1.0, 3.0, 1.0], 2) == [[1, 3], [2, 0]]


def test_stops_as_soon_as_the_label_is_fixed():
    table = np.array([[0.99, 0.98, 0.97, 0.99, 0.2, 0.1, 0.3],    # FAKE fixed after 4 (sum 3.93 >= 3.5)
                      [0.01, 0.02, 0.00, 0.01, 0.9, 0.9, 0.9],    # REAL fixed after 4 (0.04 + 3 < 3.5)
                      [0.90, 0.10, 0.90, 0.10, 0.5, 0.5, 0.5]])   # undecided until the end
    eng = TableEngine(table)
    out = run_images(eng, eng.images(), 0.5)
    assert out.experts_run.tolist() == [4, 4, 7]
    # rows drop out of later calls once decided
    assert [rows for _, rows in eng.calls] == [3, 3, 3, 3, 1, 1, 1]
    full = table.mean(axis=1)
    assert np.all((out.low <= full) & (full <= out.high))


def test_random_matrices_never_change_the_label():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n_experts = int(rng.integers(1, 9))
        kind = trial % 3
        if kind == 0:
            table = rng.random((8, n_experts))
        elif kind == 1:  # confident experts: many early exits
            table = (rng.random((8, n_experts)) > 0.5).astype(float) * 0.98 + 0.01
        else:            # scores straddling the threshold closely
            table = np.clip(0.5 + rng.normal(0, 0.02, (8, n_experts)), 0, 1)
        threshold = float(rng.choice([0.5, 0.3, 0.7, float(table.mean())]))
        eng = TableEngine(table, costs=rng.random(n_experts), workers=int(rng.integers(1, 3)))
        out = run_images(eng, eng.images(), threshold)
        full = table.mean(axis=1)
        early_labels = [label(float(np.nanmean(r)), threshold) for r in out.probs]
        assert early_labels == [label(float(s), threshold) for s in full]
        assert np.all((out.low - 1e-12 <= full) & (full <= out.high + 1e-12))


@pytest.mark.parametrize("pooling", ["mean", "median", "confident"])
def test_video_exit_is_per_video_and_exact(pooling):
    rng = np.random.default_rng(1)
    for trial in range(40):
        n_frames = int(rng.integers(1, 12))
        fake = trial % 2 == 0
        base = rng.random((n_frames, 7)) * 0.2
        table = np.where(rng.random((n_frames, 7)) < 0.85, base + (0.8 if fake else 0.0), rng.random((n_frames, 7)))
        eng = TableEngine(table, costs=[3, 3, 1, 1, 2, 2, 2.5], workers=2)
        pool = get_pooling(pooling)
        ee = EarlyExitEngine(eng, 0.5).begin_video(pool, batch_size=4)
        frames = eng.images()
        for i in range(0, n_frames, 4):
            ee.add(range(i, min(i + 4, n_frames)), frames[i:i + 4])
        out = ee.finish(range(n_frames))
        full_score = pool(table.mean(axis=1))
        partial = pool([float(np.nanmean(r)) for r in out.probs])
        assert label(partial, 0.5) == label(full_score, 0.5)
        # every frame ran the same experts
        assert len(set(map(tuple, np.isnan(out.probs)))) == 1
        if pooling == "confident":
            assert not np.isnan(out.probs).any()
        else:
            assert pool(out.low) - 1e-12 <= full_score <= pool(out.high) + 1e-12


def test_detector_early_exit_on_images_and_video(tiny_ckpt, media):
    from mffmoe.inference.detector import Detector
    full = Detector.from_dir(tiny_ckpt, device="cpu", batch_size=4)
    early = Detector(full.engine, full.info, batch_size=4, early_exit=True)
    n = len(full.info.roster)
    for key in ("jpg", "png", "mp4"):
        if key not in media:
            continue
        kwargs = {"frames": 5} if key == "mp4" else {}
        a, b = full.analyze(media[key], **kwargs), early.analyze(media[key], **kwargs)
        assert b.prediction == a.prediction
        lo, hi = b.score_interval
        assert lo - 1e-12 <= a.score <= hi + 1e-12
        assert 1 <= b.experts_run <= n and len(b.expert_scores) == b.experts_run
        assert a.experts_run is None and a.score_interval is None  # off by default
    rows = dict(early.analyze_many([media["jpg"], media["jpg"]]))
    assert all(r.experts_run is not None for r in rows.values())


def test_detector_early_exit_skips_experts_when_confident(tiny_ckpt, media):
    """With a stand-in engine whose cheap experts are certain, fewer experts run and the result says so."""
    from mffmoe.inference.detector import Detector
    from mffmoe.model.checkpoint import load_weights

    class Certain(TableEngine):
        def predict_experts(self, batch, experts):
            self.calls.append((tuple(experts), len(batch)))
            return np.ones((len(batch), len(experts)))

    _, info = load_weights(tiny_ckpt)
    eng = Certain(np.ones((1, 5)), costs=[5, 4, 3, 2, 1], workers=1)
    eng.input_size = info.input_size
    det = Detector(eng, info, early_exit=True, batch_size=8)
    r = det.analyze(media["jpg"])
    assert r.prediction == "FAKE" and r.experts_run == 3 and r.score_interval == (pytest.approx(0.6), 1.0)
    assert [e for e, _ in eng.calls] == [(4,), (3,), (2,)]
    assert "early exit" in r.note
    v = det.analyze(media["mp4"], frames=4)
    assert v.prediction == "FAKE" and v.experts_run == 3


class Recording:
    """A real engine that records which experts ran on how many images."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict_experts(self, batch, experts):
        self.calls.append((tuple(experts), len(batch)))
        return self.inner.predict_experts(batch, experts)

    def predict(self, batch):
        return self.predict_experts(batch, range(len(self.inner.roster)))


def test_wrong_stated_frame_count_with_early_exit_uses_the_final_frames(tiny_ckpt, tmp_path):
    """A cut AVI states 100 frames but holds fewer: the sampler samples, finds the stream short and
    samples again from the true count. Frames of the first pass that are not among the final indices
    must not count: not in the early-exit decision, not in the result, not in the progress."""
    from mffmoe.inference.detector import Detector
    from mffmoe.media.video import sample_indices
    from mffmoe.testing.media import make_video

    whole = make_video(tmp_path / "whole.avi", seconds=4, fps=25, width=64, height=48, codec="mjpeg", gop=10)
    data = whole.read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: len(data) * 6 // 10])

    # One expert per group (workers=1), so early exit has a decision to take after the first group.
    full = Detector.from_dir(tiny_ckpt, device="cpu", batch_size=4, engine="torch", engine_options={"workers": 1})
    engine = Recording(full.engine)
    early = Detector(engine, full.info, batch_size=4, early_exit=True)
    a = full.analyze(path, frames=10)
    calls = []
    b = early.analyze(path, frames=10, progress=lambda d, t: calls.append((d, t)))

    assert a.frame_count < 100 and "container states 100 frames" in a.note  # the count was corrected
    final = sample_indices(a.frame_count, 10)
    assert [f.frame_index for f in a.frame_predictions] == final
    assert [f.frame_index for f in b.frame_predictions] == final and b.frame_count == a.frame_count
    first, *later = dict.fromkeys(experts for experts, _ in engine.calls)
    assert later  # the first group alone could not decide
    seen = sum(n for experts, n in engine.calls if experts == first)
    assert seen > len(final)  # the first pass scored frames that are not among the final ones ...
    for group in later:  # ... but the decision ran further experts on exactly the final frames
        assert sum(n for experts, n in engine.calls if experts == group) == len(final)
    assert b.prediction == a.prediction
    lo, hi = b.score_interval
    assert lo - 1e-12 <= a.score <= hi + 1e-12
    assert calls and all(done <= total for done, total in calls) and calls[-1] == (len(final), len(final))
