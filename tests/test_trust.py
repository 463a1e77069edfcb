"""Agreement and scope (mffmoe.inference.trust): the rules on constructed expert scores and results, then
through the Detector on inputs built to trigger each scope reason (and a normal input that triggers none)."""
from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from mffmoe.inference import trust
from mffmoe.inference.assemble import ScoredFrame, image_result, out_of_scope, video_result
from mffmoe.media.image import jpeg_quality
from mffmoe.media.video import VideoInfo, VideoSummary
from mffmoe.pooling import get_pooling
from mffmoe.results import FaceResult, FrameFailure
from mffmoe.testing.media import make_image, make_video

T = 0.5


# -- agreement rules ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("experts", "assessment", "reasons"), [
    ([0.9] * 7, "likely_fake", []),
    ([0.05, 0.1, 0.02, 0.2, 0.08, 0.1, 0.15], "likely_real", []),
    ([0.6, 0.55, 0.58, 0.62, 0.57, 0.6, 0.61], "uncertain", ["near_threshold"]),       # all FAKE, barely
    ([0.95] * 5 + [0.1] * 2, "uncertain", ["experts_split", "experts_spread"]),       # 5-2: split
    ([0.95] * 6 + [0.05], "likely_fake", []),                                         # one dissenter: tolerated
    ([1.0] * 6 + [0.0], "likely_fake", []),                                           # even at the extreme
    ([0.95] * 4 + [0.3] * 3, "uncertain", ["experts_split"]),
    ([0.9, 0.1], "uncertain", ["near_threshold", "experts_split", "experts_spread"]),  # 1-1 of two experts
])
def test_assessment_rules(experts, assessment, reasons):
    score = float(np.mean(experts))
    a = trust.agreement(experts, score, T)
    assert (a.assessment, a.reasons) == (assessment, reasons)


def test_spread_rule_alone_at_a_high_threshold():
    # threshold 0.8: every expert votes REAL, the score is far below it, yet they spread over [0, 0.8)
    experts = [0.0, 0.0, 0.0, 0.75, 0.79, 0.79, 0.79]
    a = trust.agreement(experts, 0.3, 0.8)
    assert (a.fake_votes, a.assessment, a.reasons) == (0, "uncertain", ["experts_spread"])


def test_agreement_numbers_match_the_experts():
    experts = np.array([0.1, 0.7, 0.5, 0.49, 0.93, 0.2, 0.66])
    a = trust.agreement(experts, float(experts.mean()), T)
    assert a.expert_scores == pytest.approx(list(experts))
    assert a.std == pytest.approx(float(np.std(experts)))
    assert (a.min, a.max) == (pytest.approx(0.1), pytest.approx(0.93))
    assert (a.fake_votes, a.real_votes) == (4, 3)  # 0.5 counts FAKE, as the host's >= rule
    nan = trust.agreement([0.9, np.nan, 0.8], 0.85, T)  # early exit: the experts that ran
    assert nan.expert_scores == [0.9, 0.8] and nan.fake_votes + nan.real_votes == 2


def test_results_carry_agreement_at_every_level():
    r = image_result(np.array([0.9, 0.2, 0.8]), {"width": 640, "height": 480}, 0.1, threshold=T,
                     untrained=False, model_name="m")
    assert r.agreement is not None and r.agreement.expert_scores == r.expert_scores
    assert (r.agreement.fake_votes, r.agreement.real_votes, r.prediction) == (2, 1, "FAKE")
    frames = {i: ScoredFrame(i, i / 10, np.array([0.1 + 0.1 * i, 0.9 - 0.05 * i])) for i in range(5)}
    summary = VideoSummary(tuple(range(5)), 5, True, VideoInfo(640, 480, 10.0, 0.5, 5, "h264"))
    pool = get_pooling("median")
    v = video_result("v.mp4", summary, frames, {}, 0.1, pooling=pool, threshold=T, untrained=False, model_name="m")
    rows = np.stack([f.experts for f in frames.values()])
    assert v.agreement is not None
    assert v.agreement.expert_scores == pytest.approx([float(np.median(rows[:, e])) for e in range(2)])
    for fp in v.frame_predictions:
        assert fp.agreement is not None and fp.agreement.expert_scores == pytest.approx(fp.expert_scores)


# -- scope reasons on constructed results ------------------------------------------------------------
def _image(width, height, **kw):
    return image_result(np.array([0.1, 0.2]), {"width": width, "height": height}, 0.0, threshold=T, untrained=False,
                        model_name="m", **kw)


@pytest.mark.parametrize(("size", "quality", "reasons"), [
    ((640, 480), 92, []),
    ((40, 40), None, ["tiny_input"]),              # (upscaled too, implied: listed once)
    ((100, 100), None, ["upscaled"]),              # 512 / 100 = 5.1x
    ((128, 128), None, []),                        # exactly 4x: not over
    ((2000, 300), None, ["extreme_aspect"]),
    ((640, 480), 20, ["heavy_jpeg"]),
    ((640, 480), 50, []),
    ((60, 400), 10, ["tiny_input", "extreme_aspect", "heavy_jpeg"]),
])
def test_scope_reasons_on_images(size, quality, reasons):
    r = trust.judge_scope(_image(*size), 512, quality)
    assert r.scope_reasons == reasons
    assert r.in_scope is (False if reasons else None)  # frame mode: null unless a reason applies
    assert (r.note is None) == (not reasons)


def test_scope_in_faces_mode_judges_the_scored_crop():
    def face(side, score):
        return FaceResult(box=[0, 0, side, side], detector_score=0.9, crop_box=[0, 0, side, side], score=score,
                          expert_scores=[score], prediction="REAL")
    base = _image(1280, 720).model_copy(update={"crop": "faces", "in_scope": True, "score": 0.3})
    small = base.model_copy(update={"faces": [face(400, 0.1), face(90, 0.3)]})   # the score is the small face's
    assert trust.judge_scope(small, 512).scope_reasons == ["upscaled"]
    large = base.model_copy(update={"faces": [face(400, 0.3), face(90, 0.1)]})
    checked = trust.judge_scope(large, 512)
    assert checked.scope_reasons == [] and checked.in_scope is True
    wide = base.model_copy(update={"dimensions": {"width": 3000, "height": 500}, "faces": [face(400, 0.3)]})
    assert trust.judge_scope(wide, 512).scope_reasons == []  # a face crop is square: no aspect reason


def test_no_face_joins_the_other_reasons():
    r = trust.judge_scope(out_of_scope(_image(40, 40)), 512)
    assert r.scope_reasons == ["no_face", "tiny_input"] and r.in_scope is False
    assert "no face found" in r.note and "tiny input" in r.note
    assert trust.judge_scope(r, 512) == r  # idempotent


@pytest.mark.parametrize(("decoded", "sampled", "fires"), [(20, 20, False), (10, 20, False), (9, 20, True),
                                                            (2, 2, True), (3, 3, False)])
def test_few_frames(decoded, sampled, fires):
    frames = {i: ScoredFrame(i, i / 10, np.array([0.2, 0.3])) for i in range(decoded)}
    failures = {i: FrameFailure(frame_index=i, timestamp=i / 10, error="x") for i in range(decoded, sampled)}
    summary = VideoSummary(tuple(range(sampled)), sampled, True, VideoInfo(640, 480, 10.0, 2.0, sampled, "h264"))
    v = video_result("v.mp4", summary, frames, failures, 0.1, pooling=get_pooling("mean"), threshold=T,
                     untrained=False, model_name="m")
    assert trust.judge_scope(v, 512).scope_reasons == (["few_frames"] if fires else [])


# -- JPEG quality from the quantisation tables --------------------------------------------------------
@pytest.mark.parametrize("quality", [5, 20, 49, 50, 75, 92, 100])
def test_jpeg_quality_is_recovered_from_the_tables(quality):
    for mode in ("RGB", "L"):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).convert(mode).save(
            buf, "JPEG", quality=quality)
        with Image.open(buf) as im:
            assert jpeg_quality(im.quantization) == quality
    assert jpeg_quality(None) is None and jpeg_quality({}) is None


# -- through the Detector -------------------------------------------------------------------------------
def _mostly_broken_video(path):
    """An MJPEG AVI whose 20 frames are mostly zeroed out: 8 decode."""
    make_video(path, seconds=2, fps=10, codec="mjpeg", width=160, height=120)
    with av.open(str(path)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(path.read_bytes())
    for i in range(1, 19):
        if i % 3:
            pos, size = packets[i]
            data[pos:pos + size] = bytes(size)
    path.write_bytes(bytes(data))
    return path


def test_detector_scope_reasons_fire_and_stay_quiet(tiny_detector, tmp_path):
    d = tmp_path
    inputs = {
        "normal": (make_image(d / "normal.jpg", 640, 480, seed=3, quality=92), []),
        "tiny": (make_image(d / "tiny.png", 40, 40, seed=4), ["tiny_input"]),
        "wide": (make_image(d / "wide.png", 2000, 300, seed=5), ["extreme_aspect"]),
        "jpeg": (make_image(d / "q20.jpg", 640, 480, seed=6, quality=20), ["heavy_jpeg"]),
        "video": (make_video(d / "ok.mp4", seconds=1.0, fps=10, width=160, height=120), []),
        "broken": (_mostly_broken_video(d / "broken.avi"), ["few_frames"]),
    }
    for name, (path, reasons) in inputs.items():
        r = tiny_detector.analyze(path, frames=20)
        assert r.scope_reasons == reasons, name
        assert r.in_scope is (False if reasons else None), name
        assert r.agreement is not None and r.agreement.assessment in ("likely_real", "uncertain", "likely_fake")
        assert r.prediction in ("REAL", "FAKE")  # the host's field, untouched
        if r.media_type == "image":
            assert r.agreement.expert_scores == pytest.approx(r.expert_scores)
            assert r.agreement.std == pytest.approx(float(np.std(r.expert_scores)))
    broken = tiny_detector.analyze(inputs["broken"][0], frames=20)
    assert broken.frames_analyzed < 10 and "too few decodable frames" in broken.note
    # the same checks on in-memory images and through analyze_many
    with Image.open(inputs["jpeg"][0]) as im:
        assert tiny_detector.analyze_image(im).scope_reasons == ["heavy_jpeg"]
    many = dict(tiny_detector.analyze_many([str(p) for p, _ in inputs.values()], frames=20))
    for path, reasons in inputs.values():
        assert many[str(path)].scope_reasons == reasons


def test_detector_assessment_follows_the_rules(tiny_detector, media):
    r = tiny_detector.analyze(media["jpg"])
    a = r.agreement
    assert a is not None
    assert (a.assessment, a.reasons) == trust.assess(r.score, r.expert_scores, r.threshold)
    assert a.fake_votes == sum(s >= r.threshold for s in r.expert_scores)


def test_scan_rows_carry_assessment_and_scope(tiny_ckpt, tiny_detector, tmp_path):
    from mffmoe.scan import ScanOptions, read_results, run_scan

    src = tmp_path / "media"
    made = [make_image(src / "normal.jpg", 320, 240, seed=3, quality=92),
            make_image(src / "q20.jpg", 320, 240, seed=6, quality=20),
            make_image(src / "tiny.png", 40, 40, seed=4)]
    out = tmp_path / "results.parquet"
    run_scan(ScanOptions(source=src, out=out, weights=tiny_ckpt, crop="frame", batch_size=4, workers=1),
             progress=False)
    rows = {r["path"]: r for r in read_results(out).to_pylist()}
    for path in made:
        row, expected = rows[str(path)], tiny_detector.analyze(path)
        assert row["scope_reasons"] == expected.scope_reasons and row["in_scope"] == expected.in_scope
        assert row["assessment"] == expected.agreement.assessment
        assert row["expert_std"] == pytest.approx(expected.agreement.std, abs=1e-6)
        assert row["note"] == expected.note
    assert rows[str(made[1])]["scope_reasons"] == ["heavy_jpeg"] and rows[str(made[0])]["scope_reasons"] == []


def test_jpeg_quality_of_an_image_read_in_strips(tiny_detector, tmp_path, monkeypatch):
    from mffmoe.media import preprocess as pre
    from mffmoe.media.image import open_image
    from mffmoe.media.strips import StripImage

    path = make_image(tmp_path / "big.jpg", 200, 150, seed=7, quality=20)
    monkeypatch.setattr(pre, "STRIP_PIXELS", 10_000)  # "huge": read in strips by libvips
    assert isinstance(open_image(path), StripImage)
    assert tiny_detector.analyze(path).scope_reasons == ["heavy_jpeg"]


def test_faces_mode_agreement_for_faces_persons_and_videos(tmp_path):
    from mffmoe.inference.detector import Detector
    from mffmoe.testing.checkpoints import TINY_ROSTER
    from mffmoe.testing.faces import crossing_video, face_scene

    detector = Detector.untrained(TINY_ROSTER, 64, engine="torch", crop="faces")
    scene = tmp_path / "scene.png"
    face_scene(11, 640, 480, n_faces=2, sizes=(90, 160)).image.save(scene)
    r = detector.analyze(scene)
    assert r.crop == "faces" and r.faces and r.scope_reasons == [] and r.in_scope is True
    for f in r.faces:
        assert f.agreement is not None and f.agreement.expert_scores == pytest.approx(f.expert_scores)
    top = max(r.faces, key=lambda f: f.score)  # face pooling max: the image's agreement is its top face's
    assert r.agreement == top.agreement

    v = detector.analyze(crossing_video(tmp_path / "two.mp4"), frames=8)
    assert v.crop == "faces" and v.persons and v.scope_reasons == []
    for p in v.persons:
        rows = np.array([f.expert_scores for fp in v.frame_predictions for f in fp.faces or [] if f.person == p.person])
        assert p.agreement is not None and p.agreement.expert_scores == pytest.approx(list(rows.mean(axis=0)))
    reported = next(p for p in v.persons if p.counted and p.score == v.score)
    assert v.agreement == reported.agreement
