"""End to end: a tiny roster learns the planted-pattern task on CPU; its checkpoint serves the same
scores through the detector that training validated and that `evaluate` reports."""
from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from mffmoe.model.checkpoint import load_weights
from mffmoe.testing.checkpoints import TINY_ROSTER
from mffmoe.testing.planted import make_planted_dataset
from mffmoe.train.data import load_samples
from train_helpers import TINY, one_thread, read_log, run_cli  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
EPOCHS = 5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = make_planted_dataset(root / "data", 100, 100, videos_per_class=2, frames_per_video=12, seed=0)
    val = make_planted_dataset(root / "val", 24, 24, videos_per_class=2, frames_per_video=12, seed=5)
    (data / "fake" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated" * 20)
    (data / "real" / "notes.txt").write_text("not media\n")
    (val / "real" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated" * 20)
    out = root / "run"
    result = run_cli("train", "--data", data, "--val", val, "--out", out, "--experts", TINY, "--input-size", 64,
                     "--epochs", EPOCHS, "--batch-size", 16, "--lr", 1e-3, "--augment", "hflip,jpeg",
                     "--frames-per-video", 4, "--workers", 0)
    return SimpleNamespace(root=root, data=data, out=out, stderr=result.stderr, log=read_log(out))


def test_reaches_a_high_validation_auc(run):
    log = run.log
    assert [r["epoch"] for r in log] == list(range(1, EPOCHS + 1))
    last = log[-1]
    assert last["val_auc"] >= 0.95, last
    assert len(last["val_auc_experts"]) == len(TINY_ROSTER)
    assert min(last["val_auc_experts"]) >= 0.75, last
    assert last["val_frame_auc"] >= 0.9 and len(last["val_frame_auc_experts"]) == len(TINY_ROSTER)
    assert last["train_loss"] < 0.75 * log[0]["train_loss"]
    assert "val_auc" in run.stderr.replace("val AUC", "val_auc")  # the per-epoch line was printed


def test_unreadable_files_are_skipped_and_reported(run):
    assert "notes.txt" in run.stderr and "UnsupportedMediaError" in run.stderr
    # broken.png passes the type probe and fails at decode: warned in training, counted in validation
    assert "fake/broken.png" in run.stderr and "CorruptMediaError" in run.stderr
    assert all(r["val_failed"] == 1 and r["val_items"] == 24 + 24 + 4 for r in run.log)


def test_writes_the_official_layout_the_detector_loads(run):
    for name in ("MFF-MoE-v1.pth", "MFF-MoE-v1.state", "mffmoe.json"):
        assert (run.out / name).is_file() and (run.out / "best" / name).is_file()
    model, info = load_weights(run.out)
    assert info.layout == "official" and info.roster == TINY_ROSTER and info.input_size == 64 and info.ema
    steps = run.log[-1]["step"]
    assert info.ema_num_updates == [steps] * len(TINY_ROSTER)  # one EMA update per optimizer step
    manifest = json.loads((run.out / "mffmoe.json").read_text())
    assert manifest["trained"]["epochs_done"] == EPOCHS and manifest["trained"]["step"] == steps


def test_evaluate_on_the_validation_files_reproduces_the_logged_auc(run, tmp_path):
    """Training validated on the EMA weights in place; the detector folds them from the files. Same
    files, same frames -> the same AUCs (per expert too)."""
    val = load_samples(run.out / "samples.json")["val"]
    groups = {}
    for s in val:
        groups.setdefault(s.group, s.label)
    listing = tmp_path / "val.csv"
    listing.write_text("path,label\n" + "".join(f"{g},{lab}\n" for g, lab in groups.items()))
    failed = run.log[-1]["val_failed"] > 0
    res = run_cli("evaluate", "--data", listing, "--weights", run.out, "--frames", 4, "--format", "json",
                  "--scores", tmp_path / "s.csv", "--device", "cpu", expect=1 if failed else 0)
    report = json.loads(res.stdout)
    last = run.log[-1]
    assert report["auc"] == pytest.approx(last["val_auc"], abs=1e-9)
    assert [e["auc"] for e in report["experts"]] == pytest.approx(last["val_auc_experts"], abs=1e-9)
    assert report["n_items"] - report["n_failed"] == last["val_items"]


def test_evaluate_scores_equal_analyze_scores(run, tmp_path):
    test = make_planted_dataset(tmp_path / "test", 20, 20, videos_per_class=2, frames_per_video=12, seed=11)
    scores_csv = tmp_path / "scores.csv"
    res = run_cli("evaluate", "--data", test, "--weights", run.out, "--frames", 6, "--format", "json",
                  "--scores", scores_csv, "--plots", tmp_path / "plots", "--device", "cpu")
    report = json.loads(res.stdout)
    assert report["auc"] >= 0.9, report["auc"]      # it generalises to new data, not only to validation
    assert report["n_real"] == report["n_fake"] == 22 and report["n_failed"] == 0
    for key in ("auc", "eer", "accuracy", "ap", "eer_threshold", "threshold_at_fpr"):
        assert key in report and key in report["experts"][0] and key in report["frame_level"]
    assert report["video_level"]["n"] == 4 and report["frame_level"]["n"] == 4 * 6
    analyzed = json.loads(run_cli("analyze", test, "--weights", run.out, "--frames", 6, "--format", "json",
                                  "--device", "cpu").stdout)
    by_path = {r["path"]: r for r in analyzed}
    with open(scores_csv) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(by_path) == 44
    for row in rows:
        a = by_path[row["path"]]
        assert float(row["score"]) == a["score"]
        assert [float(row[f"expert_{j}"]) for j in range(2)] == a["expert_scores"]
    with open(tmp_path / "scores_frames.csv") as f:
        frames = list(csv.DictReader(f))
    video = next(r for r in analyzed if r["media_type"] == "video")
    mine = [float(r["score"]) for r in frames if r["path"] == video["path"]]
    assert mine == [fp["score"] for fp in video["frame_predictions"]]
    # and the report's metrics are scikit-learn's on those very scores
    from sklearn.metrics import roc_auc_score
    y = np.array([int(r["label"]) for r in rows])
    assert report["auc"] == pytest.approx(roc_auc_score(y, [float(r["score"]) for r in rows]), abs=1e-12)
    for name in ("roc.png", "hist.png", "roc_frames.png", "hist_frames.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
