"""Early exit in faces mode stays exact: an image with two faces and videos with two persons (or none)
get the full ensemble's label, the full score inside the interval, and say how many experts ran.

A tiny roster of five random experts at 64 px, heads sharpened so that each expert is confident (random
heads alone give P(fake) ~ 0.5 everywhere, where nothing can exit); the torch engine runs them in groups
of its `workers`, so a decision is taken after each group.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mffmoe.inference.detector import Detector
from mffmoe.results import FaceResult, ImageAnalysisResult, VideoAnalysisResult
from mffmoe.testing.faces import crossing_video, face_scene
from mffmoe.testing.media import make_video
from test_early_exit import Recording  # the same recording wrapper

ROSTER = ("test_efficientnet", "test_convnext", "test_efficientnet", "test_convnext", "test_efficientnet")
SHARPEN = 300.0
EPS = 1e-12




def _detectors(seed: int) -> tuple[Detector, Detector, Recording]:
    full = Detector.untrained(ROSTER, 64, device="cpu", engine="torch", seed=seed, crop="faces", batch_size=4)
    with torch.no_grad():
        for expert in full.engine.model.experts:
            head = expert.baseline_extractor.get_classifier()
            head.weight.mul_(SHARPEN)
            head.bias.mul_(SHARPEN)
    recording = Recording(full.engine)
    early = Detector(recording, full.info, batch_size=4, early_exit=True, crop="faces", finder=full.finder)
    return full, early, recording


@pytest.fixture(scope="module")
def pairs():
    made = [_detectors(seed) for seed in (0, 1, 2)]
    yield made
    for full, _, _ in made:
        full.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("ee_faces")
    images = []
    for seed in range(4):
        scene = face_scene(seed, 640, 480, n_faces=2, sizes=(80, 160))
        scene.image.save(root / f"two_faces_{seed}.png")
        images.append(root / f"two_faces_{seed}.png")
    return {"images": images, "persons": crossing_video(root / "persons.mp4"),
            "no_face": str(make_video(root / "no_face.mp4", seconds=0.5, fps=8, width=160, height=120))}


def _face_interval(face: FaceResult, n_experts: int) -> tuple[float, float]:
    """A face's full-ensemble bounds from the experts that ran on it (its `expert_scores`)."""
    ran = face.expert_scores
    return sum(ran) / n_experts, (sum(ran) + n_experts - len(ran)) / n_experts


def _check_image(a: ImageAnalysisResult, b: ImageAnalysisResult) -> int:
    """Exactness of an early-exit faces-mode image `b` against the full run `a`; returns experts skipped.
    The image's score is its highest face's (face pooling `max`), so its full score lies between the
    highest face low and the highest face high."""
    assert a.faces is not None and b.faces is not None and len(a.faces) == len(b.faces) == 2
    assert b.prediction == a.prediction
    bounds = [_face_interval(f, len(ROSTER)) for f in b.faces]
    for (lo, hi), fa, fb in zip(bounds, a.faces, b.faces, strict=True):
        assert len(fa.expert_scores) == len(ROSTER)
        assert lo - EPS <= fa.score <= hi + EPS
        assert fb.prediction == fa.prediction  # each face is decided on its own
    lo, hi = max(x[0] for x in bounds), max(x[1] for x in bounds)
    assert lo - EPS <= a.score <= hi + EPS
    return sum(len(ROSTER) - len(f.expert_scores) for f in b.faces)


def _check_video(a: VideoAnalysisResult, b: VideoAnalysisResult) -> None:
    assert b.prediction == a.prediction
    assert b.experts_run is not None and 1 <= b.experts_run <= len(ROSTER)
    assert len(b.expert_scores) == b.experts_run
    assert b.score_interval is not None
    lo, hi = b.score_interval
    assert lo - EPS <= a.score <= hi + EPS and lo - EPS <= b.score <= hi + EPS
    assert a.experts_run is None and a.score_interval is None
    if b.experts_run < len(ROSTER):
        assert "early exit" in (b.note or "")


def test_faces_mode_image_with_two_faces_is_exact(pairs, media):
    skipped = 0
    for full, early, _ in pairs:
        truth = {str(p): full.analyze(p) for p in media["images"]}
        for path in media["images"]:
            skipped += _check_image(truth[str(path)], early.analyze(path))
        for path, r in early.analyze_many(media["images"]):  # faces of several images share a batch
            assert isinstance(r, ImageAnalysisResult)
            skipped += _check_image(truth[path], r)
    assert skipped > 0  # the sharpened experts let some faces stop early


def test_faces_mode_image_reports_experts_run(pairs, media):
    _, early, _ = pairs[0]
    r = early.analyze(media["images"][0])
    assert r.experts_run is not None and r.score_interval is not None


def test_faces_mode_video_with_two_persons_is_exact_and_exits(pairs, media):
    exited = 0
    for full, early, recording in pairs:
        for pooling in ("mean", "median"):
            a = full.analyze(media["persons"], frames=8, pooling=pooling)
            recording.calls.clear()
            b = early.analyze(media["persons"], frames=8, pooling=pooling)
            assert a.persons is not None and b.persons is not None and len(a.persons) == len(b.persons) == 2
            _check_video(a, b)
            assert b.experts_run is not None
            exited += b.experts_run < len(ROSTER)
            # each expert ran at most once per crop: the cheapest group on every crop while decoding,
            # later groups only on the counted persons' crops
            per_expert = np.zeros(len(ROSTER), dtype=int)
            for experts, n in recording.calls:
                per_expert[list(experts)] += n
            crops = sum(len(fp.faces or []) or 1 for fp in b.frame_predictions)
            assert per_expert.max() <= crops
            assert (per_expert == crops).sum() >= early.engine.workers
    assert exited > 0


def test_faces_mode_video_without_faces_is_exact_and_flagged(pairs, media):
    full, early, _ = pairs[0]
    a = full.analyze(media["no_face"], frames=4)
    b = early.analyze(media["no_face"], frames=4)
    assert not b.in_scope and b.crop == "frame"
    _check_video(a, b)


def test_confident_pooling_runs_every_expert_in_faces_mode(pairs, media):
    full, early, _ = pairs[0]
    a = full.analyze(media["persons"], frames=8, pooling="confident")
    b = early.analyze(media["persons"], frames=8, pooling="confident")
    _check_video(a, b)
    assert b.experts_run == len(ROSTER) and b.score == pytest.approx(a.score, abs=1e-12)



class Split:
    """A stand-in engine for seven experts over two face crops told apart by brightness: experts 0-3 say
    1 on the brighter crop and 0 on the darker, experts 4-6 say 0 on both. Run two at a time, each face
    is decided after four experts (brighter: [4/7, 1], FAKE; darker: [0, 3/7], REAL)."""

    name = device = "split"
    roster = tuple(f"e{i}" for i in range(7))
    input_size = 64
    costs = [1.0] * 7
    workers = 2

    def __init__(self, cut: float) -> None:
        self.cut = cut

    def predict_experts(self, batch, experts):
        bright = np.asarray(batch).mean(axis=(1, 2, 3)) > self.cut
        return np.array([[1.0 if e < 4 and b else 0.0 for e in experts] for b in bright])

    def predict(self, batch):
        return self.predict_experts(batch, range(7))


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # pool_faces' nanmean over experts that did not run
def test_face_pooling_mean_keeps_the_label(tmp_path):
    from mffmoe.faces.finder import FaceFinder
    from mffmoe.model.checkpoint import CheckpointInfo

    scene = face_scene(0, 640, 480, n_faces=2, sizes=(80, 160))
    path = tmp_path / "two_faces.png"
    scene.image.save(path)
    finder = FaceFinder()
    crops = [f.pixels.mean().item() for f in finder.find(np.asarray(scene.image), 64)]
    assert len(crops) == 2 and abs(crops[0] - crops[1]) > 1e-3
    info = CheckpointInfo(source="split", layout="untrained", roster=Split.roster, input_size=64, ema=False)
    engine = Split(sum(crops) / 2)
    full = Detector(engine, info, crop="faces", finder=finder, face_pooling="mean")
    early = Detector(engine, info, crop="faces", finder=finder, face_pooling="mean", early_exit=True)
    a = full.analyze(path)
    assert a.prediction == "REAL" and a.score == pytest.approx(2 / 7)  # the full ensemble: (4/7 + 0) / 2
    b = early.analyze(path)
    finder.close()
    # deciding each face alone would give (1 + 0) / 2 = 0.5 -> FAKE: with mean pooling every expert runs
    assert b.prediction == a.prediction and b.score == pytest.approx(a.score) and b.experts_run == 7
