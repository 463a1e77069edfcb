"""`mffmoe evaluate`: report shape, levels, thresholds, failures and the scores files (random weights:
what is checked here is the bookkeeping; test_train.py checks a trained model)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mffmoe.testing.checkpoints import TINY_ROSTER, make_random_checkpoint
from mffmoe.testing.planted import make_planted_dataset
from train_helpers import run_cli, said


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    weights = make_random_checkpoint(root / "w", TINY_ROSTER, 32, seed=2)
    data = make_planted_dataset(root / "data", 6, 5, size=32, videos_per_class=1, frames_per_video=8, seed=4)
    return root, weights, data


def test_json_report_levels_and_thresholds(setup, tmp_path):
    root, weights, data = setup
    res = run_cli("evaluate", "--data", data, "--weights", weights, "--frames", 5, "--format", "json",
                  "--threshold", 0.3, "--fpr", 0.2, "--scores", tmp_path / "s.csv", "--device", "cpu")
    r = json.loads(res.stdout)
    assert (r["n_real"], r["n_fake"], r["n_items"], r["n_failed"]) == (7, 6, 13, 0)
    assert r["threshold"] == 0.3 and r["target_fpr"] == 0.2 and r["roster"] == list(TINY_ROSTER)
    assert [e["name"] for e in r["experts"]] == list(TINY_ROSTER)
    assert r["video_level"]["n"] == 2 and r["frame_level"]["n"] == 10
    assert len(r["frame_level"]["experts"]) == 2
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    y = np.array([int(row["label"]) for row in rows])
    s = np.array([float(row["score"]) for row in rows])
    assert r["auc"] == pytest.approx(roc_auc_score(y, s)) and r["ap"] == pytest.approx(average_precision_score(y, s))
    assert r["accuracy"] == pytest.approx(np.mean((s >= 0.3) == y))
    assert [row["prediction"] for row in rows] == ["FAKE" if v >= 0.3 else "REAL" for v in s]
    e1 = np.array([float(row["expert_1"]) for row in rows])
    assert r["experts"][1]["auc"] == pytest.approx(roc_auc_score(y, e1))
    if r["threshold_at_fpr"] is not None:
        assert np.mean(s[y == 0] >= r["threshold_at_fpr"]) <= 0.2
    with open(tmp_path / "s_frames.csv") as f:
        frames = list(csv.DictReader(f))
    assert len(frames) == 10 and {row["frame_index"] for row in frames} == {"0", "1", "3", "5", "7"}


def test_failed_files_are_listed_and_left_out(setup, tmp_path):
    root, weights, _ = setup
    data = make_planted_dataset(tmp_path / "d", 3, 3, size=32, seed=9)
    from mffmoe.testing.media import make_image
    jpg = make_image(data / "fake" / "zz_broken.jpg", 64, 64, quality=90).read_bytes()
    (data / "fake" / "zz_broken.jpg").write_bytes(jpg[: len(jpg) // 2])  # truncated
    listing = tmp_path / "list.csv"
    listing.write_text("path,label\n" + "".join(
        f"{p.relative_to(tmp_path)},{p.parent.name}\n" for p in sorted(data.rglob("*.*"))) + "missing.png,real\n")
    res = run_cli("evaluate", "--data", listing, "--weights", weights, "--format", "json",
                  "--scores", tmp_path / "s.csv", "--device", "cpu", expect=1)
    r = json.loads(res.stdout)
    assert (r["n_items"], r["n_failed"], r["n"]) == (8, 2, 6)
    kinds = {f["path"].rsplit("/", 1)[1]: f["error"]["type"] for f in r["failures"]}
    assert kinds == {"zz_broken.jpg": "CorruptMediaError", "missing.png": "MediaNotFoundError"}
    assert "2 of 8 file(s) failed" in said(res)
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and sum(bool(row["error"]) for row in rows) == 2
    assert "video_level" not in r and not (tmp_path / "s_frames.csv").exists()


def test_table_and_one_class(setup, tmp_path):
    root, weights, _ = setup
    data = make_planted_dataset(tmp_path / "d", 0, 4, size=32, seed=1)
    res = run_cli("evaluate", "--data", data, "--weights", weights, "--scores", tmp_path / "s.csv",
                  "--plots", tmp_path / "p", "--device", "cpu")
    assert "ensemble" in res.stdout and "test_convnext" in res.stdout and "AUC" in res.stdout
    assert "need both real and fake" in " ".join(res.stdout.split())
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["hist.png"]  # no ROC with one class


@pytest.mark.parametrize("args,message", [
    (["--data", "nowhere"], "no such file or directory"),
    (["--data", "{data}", "--weights", "{root}/none"], "no MFF-MoE weights found"),
    (["--data", "{data}", "--weights", "{weights}", "--pooling", "max"], "unknown pooling")])
def test_bad_arguments_are_one_line_errors(setup, args, message):
    root, weights, data = setup
    res = run_cli("evaluate", *[a.format(root=root, weights=weights, data=data) for a in args], expect=2)
    assert message in said(res) and "Traceback" not in res.stderr


def test_ece_and_brier_by_hand(setup, tmp_path):
    from mffmoe.evaluation.metrics import brier, ece

    # bins of width 1/15: 0.05 and 0.06 share bin 0 (1 of 2 fake, mean 0.055), 0.95 and 1.0 the last one
    y, p = [0, 1, 1, 1], [0.05, 0.06, 0.95, 1.0]
    assert ece(y, p) == pytest.approx((2 * abs(0.5 - 0.055) + 2 * abs(1.0 - 0.975)) / 4)
    assert brier(y, p) == pytest.approx(np.mean((np.array(p) - y) ** 2))
    root, weights, data = setup
    r = json.loads(run_cli("evaluate", "--data", data, "--weights", weights, "--format", "json",
                           "--scores", tmp_path / "s.csv", "--plots", tmp_path / "p", "--device", "cpu").stdout)
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    y, s = [int(row["label"]) for row in rows], [float(row["score"]) for row in rows]
    assert r["ece"] == pytest.approx(ece(y, s)) and r["brier"] == pytest.approx(brier(y, s))
    assert r["calibration"] is None  # none next to these weights
    assert (tmp_path / "p" / "reliability.png").is_file()
