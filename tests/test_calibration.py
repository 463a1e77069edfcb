"""Calibration (`mffmoe calibrate`): a tiny roster trained on the planted-pattern task scores held-out data
miscalibrated (the mean of a sure and an unsure expert is underconfident); a calibration fitted on other
labelled data lowers the held-out ECE, `analyze` reports `calibrated_score` beside the unchanged `score`,
and `evaluate` compares ECE and Brier score before and after."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mffmoe.calibration import CALIBRATION_FILE, Calibration, data_hash, fit, load_calibration
from mffmoe.datasets import read_dataset
from mffmoe.evaluation.metrics import ece
from mffmoe.model.checkpoint import read_info
from mffmoe.testing.planted import make_planted_dataset
from train_helpers import TINY, one_thread, run_cli, said  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def copy_weights(src: Path, dst: Path) -> Path:
    """A copy with the same fingerprint (names, sizes and mtimes kept), without any calibration."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(CALIBRATION_FILE, "best", "*.json.tmp*"))
    return dst


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    data = make_planted_dataset(root / "train", 100, 100, size=32, seed=0)
    weights = root / "run"
    run_cli("train", "--data", data, "--val-split", 0.2, "--out", weights, "--experts", TINY, "--input-size", 32,
            "--epochs", 10, "--batch-size", 16, "--lr", 1e-3, "--workers", 0, "--augment", "none")
    cal = make_planted_dataset(root / "cal", 40, 40, size=32, seed=3)
    held = make_planted_dataset(root / "held", 40, 40, size=32, seed=7)
    media = make_planted_dataset(root / "media", 2, 2, size=32, videos_per_class=1, frames_per_video=6, seed=9)
    before = json.loads(run_cli("analyze", media, "--weights", weights, "--frames", 4, "--format", "json",
                                "--device", "cpu").stdout)
    res = run_cli("calibrate", "--data", cal, "--weights", weights, "--format", "json", "--device", "cpu")
    return SimpleNamespace(root=root, weights=weights, cal=cal, held=held, media=media, before=before,
                           record=json.loads(res.stdout))


def test_calibrate_writes_its_record_next_to_the_weights(run):
    r = run.record
    assert Path(r["path"]) == run.weights / CALIBRATION_FILE
    assert json.loads((run.weights / CALIBRATION_FILE).read_text())["data_hash"] == r["data_hash"]
    assert (r["method"], r["fusion"], r["crop"], r["n_real"], r["n_fake"], r["n_failed"]) == (
        "temperature", "mean", "frame", 40, 40, 0)
    assert r["fitted"][:2] == "20" and r["fingerprint"] == read_info(run.weights).fingerprint()
    assert r["params"]["temperature"] < 1.0  # underconfident scores: sharpened
    assert r["name"].startswith("temperature " + r["fitted"][:10]) and r["data_hash"][:12] in r["name"]
    # the data hash depends on relative paths, labels and contents, not on where the folder is
    moved = shutil.copytree(run.cal, run.root / "cal-moved")
    assert data_hash(read_dataset(moved), moved) == r["data_hash"]
    (moved / "real" / "real_0000.png").rename(moved / "fake" / "real_0000.png")
    assert data_hash(read_dataset(moved), moved) != r["data_hash"]
    cv = r["cv"]
    assert cv["folds"] == 5 and cv["ece_bins"] == 15
    assert cv["after"]["ece"] < cv["before"]["ece"]


def test_calibration_lowers_the_ece_on_held_out_data(run, tmp_path):
    res = run_cli("evaluate", "--data", run.held, "--weights", run.weights, "--format", "json",
                  "--scores", tmp_path / "s.csv", "--plots", tmp_path / "plots", "--device", "cpu")
    r = json.loads(res.stdout)
    c = r["calibration"]
    assert c["applied"] and c["name"] == run.record["name"] and c["n"] == 80
    assert c["after"]["ece"] < c["before"]["ece"] - 0.03, c
    assert c["after"]["brier"] < c["before"]["brier"], c
    print(f"held-out ECE {c['before']['ece']:.4f} -> {c['after']['ece']:.4f}, "
          f"Brier {c['before']['brier']:.4f} -> {c['after']['brier']:.4f}")
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    y, s = [int(x["label"]) for x in rows], [float(x["score"]) for x in rows]
    assert c["before"]["ece"] == pytest.approx(ece(y, s)) == pytest.approx(r["ece"])
    assert r["experts"][0]["ece"] is not None and r["experts"][1]["brier"] is not None
    assert (tmp_path / "plots" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = run_cli("evaluate", "--data", run.held, "--weights", run.weights, "--scores", tmp_path / "t.csv",
                    "--device", "cpu")
    assert f"calibration {run.record['name']}: ECE" in said(table) and "->" in said(table)


def test_analyze_reports_the_calibrated_score_and_keeps_the_score(run):
    after = json.loads(run_cli("analyze", run.media, "--weights", run.weights, "--frames", 4, "--format", "json",
                               "--device", "cpu").stdout)
    cal = Calibration.from_dict(run.record)
    assert {r["media_type"] for r in after} == {"image", "video"}
    for old, new in zip(run.before, after, strict=True):
        assert old["calibrated_score"] is None and old["calibration"] is None
        assert new["score"] == old["score"] and new["expert_scores"] == old["expert_scores"]
        assert new["prediction"] == old["prediction"]
        assert new["calibration"] == {"name": run.record["name"], "method": "temperature", "fusion": "mean",
                                      "crop": "frame", "applied": True, "note": None}
        assert new["calibrated_score"] == pytest.approx(cal.apply_one(new["score"], new["expert_scores"]))
        t = run.record["params"]["temperature"]
        z = np.log(new["score"]) - np.log1p(-new["score"])
        assert new["calibrated_score"] == pytest.approx(1 / (1 + np.exp(-z / t)), abs=1e-6)
        for fp in new.get("frame_predictions") or []:  # a video's frames too
            assert fp["calibrated_score"] == pytest.approx(cal.apply_one(fp["score"], fp["expert_scores"]))
    table = run_cli("analyze", run.media, "--weights", run.weights, "--frames", 4, "--device", "cpu").stdout
    assert f"calibrated by: {run.record['name']}" in " ".join(table.split())  # the table names it


def test_not_applied_in_another_crop_mode_or_on_changed_weights(run, tmp_path):
    from mffmoe.inference.detector import Detector

    image = str(sorted((run.media / "fake").glob("*.png"))[0])
    detector = Detector.from_dir(run.weights, device="cpu")
    result = detector.analyze(image)
    assert result.calibration is not None and result.calibration.applied and result.calibrated_score is not None
    bare = result.model_copy(update={"calibrated_score": None, "calibration": None})
    faces = detector.calibrated(bare, crop="faces")
    assert faces.calibrated_score is None and faces.calibration is not None and not faces.calibration.applied
    assert faces.calibration.note == "fitted in crop mode frame; this call scored in faces"
    early = detector.calibrated(bare.model_copy(update={"experts_run": 1}))
    assert early.calibrated_score is None and "early exit" in (early.calibration.note or "")
    detector.close()
    # the same files with a new modification time: other weights as far as the fingerprint knows
    moved = copy_weights(run.weights, tmp_path / "w")
    shutil.copy2(run.weights / CALIBRATION_FILE, moved / CALIBRATION_FILE)
    assert load_calibration(read_info(moved)) == (Calibration.from_dict(run.record), None)
    import os
    os.utime(moved / "MFF-MoE-v1.pth", ns=(10**18, 10**18))
    r = json.loads(run_cli("analyze", image, "--weights", moved, "--format", "json", "--device", "cpu").stdout)[0]
    assert r["score"] == result.score and r["calibrated_score"] is None
    assert not r["calibration"]["applied"] and "fitted on other weights" in r["calibration"]["note"]
    assert "rerun mffmoe calibrate" in r["calibration"]["note"]


def test_falls_back_to_the_cache_folder_when_the_weights_folder_is_not_writable(run, tmp_path, monkeypatch):
    import mffmoe.engine.cache as cache

    w = copy_weights(run.weights, tmp_path / "w")
    monkeypatch.setenv("MFFMOE_CACHE_DIR", str(tmp_path / "cache"))
    writable = cache._writable
    monkeypatch.setattr(cache, "_writable", lambda d: not Path(d).is_relative_to(w) and writable(d))
    r = json.loads(run_cli("calibrate", "--data", run.cal, "--weights", w, "--method", "isotonic", "--format",
                           "json", "--device", "cpu").stdout)
    fingerprint = read_info(w).fingerprint()
    assert Path(r["path"]) == tmp_path / "cache" / fingerprint / CALIBRATION_FILE
    assert not (w / CALIBRATION_FILE).exists()
    image = str(sorted((run.media / "real").glob("*.png"))[0])
    a = json.loads(run_cli("analyze", image, "--weights", w, "--format", "json", "--device", "cpu").stdout)[0]
    assert a["calibration"]["applied"] and a["calibration"]["method"] == "isotonic"
    assert a["calibrated_score"] == pytest.approx(np.interp(a["score"], r["params"]["x"], r["params"]["y"]))


def test_a_safetensors_file_gets_its_own_record_beside_it(run, tmp_path):
    st = tmp_path / "model.safetensors"
    run_cli("convert", run.weights, st)
    r = json.loads(run_cli("calibrate", "--data", run.cal, "--weights", st, "--format", "json",
                           "--device", "cpu").stdout)
    assert Path(r["path"]) == tmp_path / f"model.{CALIBRATION_FILE}"
    assert r["params"]["a"] == pytest.approx(run.record["params"]["a"], rel=1e-4)  # the same model, same fit
    image = str(sorted((run.media / "fake").glob("*.png"))[0])
    a = json.loads(run_cli("analyze", image, "--weights", st, "--format", "json", "--device", "cpu").stdout)[0]
    assert a["calibration"]["applied"] and a["calibration"]["name"] == r["name"]


def test_a_faces_mode_calibration_applies_to_faces_calls_and_their_faces(run, tmp_path):
    from mffmoe.testing.planted_faces import make_planted_face_dataset

    w = copy_weights(run.weights, tmp_path / "w")
    data = make_planted_face_dataset(tmp_path / "faces", 6, 6, size=192, face_sizes=(56, 72), input_size=32)
    r = json.loads(run_cli("calibrate", "--data", data, "--weights", w, "--crop", "faces", "--method", "platt",
                           "--format", "json", "--device", "cpu").stdout)
    assert r["crop"] == "faces" and r["n_real"] + r["n_fake"] == 12
    cal = Calibration.from_dict(r)
    image = str(sorted((data / "fake").glob("*.png"))[0])
    a = json.loads(run_cli("analyze", image, "--weights", w, "--crop", "faces", "--format", "json",
                           "--device", "cpu").stdout)[0]
    assert a["crop"] == "faces" and a["faces"] and a["calibration"]["applied"]
    assert a["calibrated_score"] == pytest.approx(cal.apply_one(a["score"], a["expert_scores"]))
    for face in a["faces"]:
        assert face["calibrated_score"] == pytest.approx(cal.apply_one(face["score"], face["expert_scores"]))
    f = json.loads(run_cli("analyze", image, "--weights", w, "--crop", "frame", "--format", "json",
                           "--device", "cpu").stdout)[0]
    assert f["calibrated_score"] is None and not f["calibration"]["applied"]
    assert f["calibration"]["note"] == "fitted in crop mode faces; this call scored in frame"


def test_learned_fusion_reports_its_cross_validated_auc_against_the_mean(run, tmp_path):
    w = copy_weights(run.weights, tmp_path / "w")
    res = run_cli("calibrate", "--data", run.cal, "--weights", w, "--fusion", "learned", "--method", "platt",
                  "--format", "json", "--device", "cpu")
    r = json.loads(res.stdout)
    f = r["cv"]["fusion"]
    assert f["mean_auc"] == r["cv"]["before"]["auc"]
    if f["learned_auc"] >= f["mean_auc"]:
        assert f["better"] in ("learned", "tie") and "NOT" not in f["note"]
    else:
        assert f["better"] == "mean" and "NOT better" in f["note"]
    print(f"cross-validated AUC: learned {f['learned_auc']:.4f}, mean {f['mean_auc']:.4f}")
    assert len(r["fusion_weights"]) == 2 and r["name"].startswith("platt+learned ")
    image = str(sorted((run.media / "fake").glob("*.png"))[0])
    a = json.loads(run_cli("analyze", image, "--weights", w, "--format", "json", "--device", "cpu").stdout)[0]
    assert a["calibration"]["fusion"] == "learned" and a["calibration"]["applied"]

    def logit(p):
        p = np.asarray(p, dtype=np.float64)
        return np.log(p) - np.log1p(-p)
    fused = 1 / (1 + np.exp(-(logit(a["expert_scores"]) @ np.array(r["fusion_weights"]) + r["fusion_bias"])))
    expected = 1 / (1 + np.exp(-(r["params"]["a"] * logit(fused) + r["params"]["b"])))
    assert a["calibrated_score"] == pytest.approx(expected, abs=1e-6)
    table = run_cli("calibrate", "--data", run.cal, "--weights", w, "--fusion", "learned", "--device", "cpu")
    assert "fusion: learned AUC" in said(table) and f"written: {w / CALIBRATION_FILE}" in said(table)


# -- the fitting itself, on synthetic scores -------------------------------------------------------
def _synthetic(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    strong = 4.0 * (2 * y - 1) + rng.normal(0, 2.0, n)   # informative
    noise = rng.normal(0, 6.0, n)                       # uninformative, loud
    experts = 1 / (1 + np.exp(-np.stack([strong, noise], axis=1)))
    return y, experts.mean(axis=1), experts


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_each_method_lowers_the_out_of_fold_ece(method):
    y, _, experts = _synthetic()
    under = 1 / (1 + np.exp(-0.3 * np.log(experts[:, 0] / (1 - experts[:, 0]))))  # underconfident
    params, weights, bias, cv = fit(y, under, experts, method)
    assert weights is None and bias is None and cv["folds"] == 5
    assert cv["after"]["ece"] < 0.5 * cv["before"]["ece"], cv
    assert cv["after"]["auc"] > 0.9


def test_learned_fusion_beats_the_mean_when_an_expert_is_noise_and_says_so_when_not():
    y, mean, experts = _synthetic()
    *_, cv = fit(y, mean, experts, "platt", "learned")
    f = cv["fusion"]
    assert f["better"] == "learned" and f["learned_auc"] > f["mean_auc"] + 0.02
    assert f["mean_auc"] == pytest.approx(roc_auc_score(y, mean))
    same = np.repeat(experts[:, :1], 2, axis=1)  # two copies of one expert: nothing to learn
    *_, cv = fit(y, same.mean(axis=1), same, "temperature", "learned")
    f = cv["fusion"]
    assert f["better"] == ("learned" if f["learned_auc"] > f["mean_auc"] else
                           "mean" if f["learned_auc"] < f["mean_auc"] else "tie")
    assert ("NOT" in f["note"]) == (f["better"] == "mean")


def test_too_few_items_is_a_clear_error():
    from mffmoe.errors import DatasetError

    with pytest.raises(DatasetError, match="at least 2 real and 2 fake"):
        fit([0, 0, 1], [0.1, 0.2, 0.9], [[0.1], [0.2], [0.9]])


# -- items built to split the experts --------------------------------------------------------------
def _grating(size: int, sign: int) -> np.ndarray:
    """The planted grating (period 8, 10 grey levels) along one diagonal (+1) or the other (-1)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return 10.0 * np.sin(2 * np.pi * (x + sign * y) / 8.0)[..., None]


def _split_dataset(out: Path, classes: dict[str, list[tuple[int, ...]]], n: int, seed: int, size: int = 32) -> Path:
    """`n` pictures per class of the planted task, cycling through the class's gratings (none, +1, -1)."""
    from PIL import Image

    from mffmoe.testing.media import pattern

    rng = np.random.default_rng(seed)
    for label, kinds in classes.items():
        (out / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = pattern(size, size, t=int(rng.integers(0, 200)), seed=int(rng.integers(0, 1_000_000)))
            img = img.astype(np.float32) + rng.normal(0.0, 8.0, img.shape).astype(np.float32)
            for sign in kinds[i % len(kinds)]:
                img += _grating(size, sign)
            Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8)).save(out / label / f"{label}_{i:04d}.png")
    return out


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Two experts trained on different halves of the pattern: expert 0 calls the +1 grating fake (and the
    -1 one real), expert 1 the other way round; joined into one roster's weights."""
    from mffmoe.model.checkpoint import load_weights, save_official, write_manifest
    from mffmoe.model.ema import ExponentialMovingAverage
    from mffmoe.model.ensemble import build_model
    from mffmoe.testing.checkpoints import TINY_ROSTER

    root = tmp_path_factory.mktemp("split")
    halves = {0: {"real": [(), (-1,)], "fake": [(1,)]}, 1: {"real": [(), (1,)], "fake": [(-1,)]}}
    model = build_model(TINY_ROSTER, 32)
    for j, expert in enumerate(TINY_ROSTER):
        data = _split_dataset(root / f"data{j}", halves[j], 100, seed=j)
        run_cli("train", "--data", data, "--val-split", 0.2, "--out", root / f"run{j}", "--experts", expert,
                "--input-size", 32, "--epochs", 12, "--batch-size", 16, "--lr", 3e-3, "--workers", 0,
                "--augment", "none")
        model.experts[j].load_state_dict(load_weights(root / f"run{j}")[0].experts[0].state_dict())
    weights = save_official(model, [ExponentialMovingAverage(e.parameters()) for e in model.experts], root / "w")
    write_manifest(weights, TINY_ROSTER, 32, crop="frame")
    return SimpleNamespace(root=root, weights=weights)


def test_items_built_to_split_the_experts_split_their_votes_and_are_uncertain(split):
    """On a +1-only (or -1-only) picture one expert votes FAKE and the other REAL, and the assessment is
    `uncertain` (experts split); on plain pictures both vote REAL."""
    for kinds, fake_expert in (((1,), 0), ((-1,), 1), ((), None)):
        d = _split_dataset(split.root / f"test{kinds}", {"fake": [kinds]}, 20, seed=7)
        rows = json.loads(run_cli("analyze", d, "--weights", split.weights, "--format", "json",
                                  "--device", "cpu").stdout)
        votes = np.array([r["expert_scores"] for r in rows]) >= 0.5
        if fake_expert is None:
            assert votes.mean(axis=0).max() <= 0.2, votes.mean(axis=0)
            continue
        assert votes[:, fake_expert].mean() >= 0.8 and votes[:, 1 - fake_expert].mean() <= 0.2, votes.mean(axis=0)
        split_rows = [r for r, v in zip(rows, votes, strict=True) if v.any() and not v.all()]
        assert len(split_rows) >= 12
        assert all(r["agreement"]["assessment"] == "uncertain" for r in split_rows)
        assert all("experts_split" in r["agreement"]["reasons"] for r in split_rows)


@pytest.mark.parametrize("edit", [{"params": {}}, {"method": "magic"}, {"fusion": "learned", "fusion_weights": None},
                                  {"roster": "x"}])
def test_a_broken_record_is_reported_not_applied(run, tmp_path, edit):
    w = copy_weights(run.weights, tmp_path / "w")
    (w / CALIBRATION_FILE).write_text(json.dumps({**run.record, **edit}))
    cal, why = load_calibration(read_info(w))
    assert cal is None and "not a calibration record" in (why or "")
    image = str(sorted((run.media / "fake").glob("*.png"))[0])
    a = json.loads(run_cli("analyze", image, "--weights", w, "--format", "json", "--device", "cpu").stdout)[0]
    assert a["calibrated_score"] is None and not a["calibration"]["applied"]
    assert "not a calibration record" in a["calibration"]["note"]
