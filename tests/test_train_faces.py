"""Face-centred training and evaluation, end to end, on a task we control: a pattern planted on the FACE
only (`mffmoe.testing.planted_faces`). Trained and evaluated on face crops (`--crop faces`) a tiny roster
learns it; trained and evaluated on whole frames it can hardly see it (the faces are small in a large
frame, so resizing the frame to the input size averages the pattern away)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from mffmoe.faces.finder import FaceFinder
from mffmoe.media.preprocess import preprocess
from mffmoe.model.checkpoint import load_weights, trained_crop, trained_face_options
from mffmoe.testing.faces import face_free_scene
from mffmoe.testing.planted_faces import make_planted_face_dataset, planted_face_scene
from mffmoe.train.data import load_samples
from train_helpers import TINY, one_thread, read_log, run_cli  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
N_TRAIN, N_TEST, EPOCHS = 128, 30, 12
ARGS = ["--experts", TINY, "--input-size", 64, "--epochs", EPOCHS, "--batch-size", 16, "--lr", 2e-3,
        "--augment", "hflip", "--workers", 0, "--device", "cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    data = make_planted_face_dataset(root / "data", N_TRAIN, N_TRAIN, seed=0)
    test = make_planted_face_dataset(root / "test", N_TEST, N_TEST, seed=7)
    face_free_scene(1, 384, 384).save(data / "real" / "zz_no_face.png")  # scored (and trained) whole
    out = {}
    for crop in ("faces", "frame"):
        out[crop] = root / crop
        run_cli("train", "--data", data, "--val", test, "--out", out[crop], "--crop", crop, *ARGS)
    return SimpleNamespace(root=root, data=data, test=test, faces=out["faces"], frame=out["frame"])


def _evaluate(weights, data, tmp_path, *extra):
    res = run_cli("evaluate", "--data", data, "--weights", weights, "--format", "json", "--scores",
                  tmp_path / "s.csv", "--device", "cpu", *extra)
    return json.loads(res.stdout)


def _aucs(report) -> str:
    return f"{report['auc']:.3f} (experts " + ", ".join(f"{e['auc']:.3f}" for e in report["experts"]) + ")"


def test_faces_mode_learns_the_face_pattern_and_frame_mode_does_worse(runs, tmp_path):
    faces = _evaluate(runs.faces, runs.test, tmp_path)   # crop: the weights' trained mode
    frame = _evaluate(runs.frame, runs.test, tmp_path)
    assert faces["crop"] == "faces" and frame["crop"] == "frame"
    assert faces["n_no_face"] == 0 and faces["n"] == 2 * N_TEST
    numbers = f"held-out AUC: faces mode {_aucs(faces)}, frame mode {_aucs(frame)}"
    print(numbers)
    assert faces["auc"] >= 0.95, numbers
    assert frame["auc"] <= 0.8 and faces["auc"] - frame["auc"] >= 0.15, numbers


def test_the_checkpoint_records_its_crop_and_inference_defaults_to_it(runs):
    manifest = json.loads((runs.faces / "mffmoe.json").read_text())
    assert (manifest["crop"], manifest["face_margin"], manifest["align"], manifest["min_face"]) == \
        ("faces", 1.3, False, 32)
    assert json.loads((runs.frame / "mffmoe.json").read_text())["crop"] == "frame"
    assert "face_margin" not in json.loads((runs.frame / "mffmoe.json").read_text())
    _, info = load_weights(runs.faces / "best")
    assert trained_crop(info) == "faces"
    assert trained_face_options(info) == {"face_margin": 1.3, "align": False, "min_face": 32}
    _, info = load_weights(runs.frame)
    assert trained_crop(info) == "frame" and trained_face_options(info) == {}


def test_training_samples_are_the_crops_inference_scores(runs):
    samples = load_samples(runs.faces / "samples.json")["train"]
    assert len(samples) == 2 * N_TRAIN + 1
    whole = [s for s in samples if s.face is None]
    assert [s.source for s in whole] == [str(runs.data / "real" / "zz_no_face.png")]  # no face: the frame
    faced = [s for s in samples if s.face is not None]
    assert all(s.face == 0 and s.source.startswith(str(runs.faces / "faces")) for s in faced)
    # found once, at the start: one cached index per image
    assert len(list((runs.faces / "faces").glob("*/index.json"))) == 2 * N_TRAIN + 1 + 2 * N_TEST
    finder = FaceFinder(margin=1.3, min_face=32)
    try:
        for s in faced[:: len(faced) // 4]:
            crop = np.asarray(Image.open(s.source))
            found = finder.find(np.asarray(Image.open(s.group).convert("RGB")), 64)
            assert np.array_equal(crop, found[s.face].crop.pixels)
            assert np.array_equal(preprocess(Image.open(s.source).convert("RGB"), 64), found[s.face].pixels)
    finally:
        finder.close()


def test_validation_in_faces_mode_is_what_evaluate_reports(runs, tmp_path):
    last = read_log(runs.faces)[-1]
    report = _evaluate(runs.faces, runs.test, tmp_path)
    assert report["auc"] == pytest.approx(last["val_auc"], abs=1e-9)
    assert [e["auc"] for e in report["experts"]] == pytest.approx(last["val_auc_experts"], abs=1e-9)


def test_evaluate_crop_option_and_table_line(runs, tmp_path):
    frame = _evaluate(runs.faces, runs.test, tmp_path, "--crop", "frame")
    assert frame["crop"] == "frame" and "face_options" not in frame
    res = run_cli("evaluate", "--data", runs.test, "--weights", runs.faces, "--scores", tmp_path / "t.csv",
                  "--device", "cpu", "--face-margin", 1.5)
    line = " ".join(res.stderr.split())
    assert "crop: faces (margin 1.5, align off, min face 32" in line and "0 file(s) without a face" in line


def test_the_planted_pattern_is_on_the_face_only():
    real, fake = planted_face_scene(3, False), planted_face_scene(3, True)
    diff = np.abs(np.asarray(fake.image, dtype=int) - np.asarray(real.image, dtype=int)).max(axis=2)
    left, top, right, bottom = (int(round(v)) for v in fake.faces[0])
    assert diff[top:bottom, left:right].mean() > 5
    outside = diff.copy()
    outside[top:bottom, left:right] = 0
    assert outside.max() == 0
