"""analyze(): results against the spec's algorithm, video fields, pooling, batching, failures."""
from __future__ import annotations

import os

import av
import numpy as np
import pytest

from conftest import TINY_SIZE
from mffmoe import Detector, MFFMoEDetectorV1, MFFMoEV1Config
from mffmoe.config import DEFAULT_ROSTER
from mffmoe.errors import (
    CorruptMediaError,
    EmptyMediaError,
    UnexpectedDecodeError,
    UnreadableMediaError,
    UnsupportedMediaError,
)
from mffmoe.pooling import confident, get_pooling
from mffmoe.testing.checkpoints import TINY_ROSTER, make_random_checkpoint
from mffmoe.testing.media import make_image, make_video
from mffmoe.testing.reference import ReferenceDetector


@pytest.fixture(scope="module")
def reference(tiny_ckpt):
    return ReferenceDetector(tiny_ckpt, TINY_ROSTER, TINY_SIZE)


def test_image_result_fields_and_agreement_with_reference(tiny_detector, reference, media):
    for key in ("jpg", "png"):
        r = tiny_detector.analyze(media[key])
        assert r.media_type == "image"
        assert r.score == pytest.approx(reference.score_file(media[key]), abs=1e-6)
        assert r.score == pytest.approx(np.mean(r.expert_scores), abs=1e-12)
        assert len(r.expert_scores) == len(TINY_ROSTER)
        assert r.prediction == ("FAKE" if r.score >= 0.5 else "REAL")
        assert r.confidence == pytest.approx(r.score if r.prediction == "FAKE" else 1 - r.score)
        assert r.threshold == 0.5 and not r.untrained and r.note is None
        assert r.processing_time > 0
    assert tiny_detector.analyze(media["png"]).dimensions == {"width": 150, "height": 260}


def test_video_matches_reference_and_carries_frame_details(tiny_detector, reference, media):
    r = tiny_detector.analyze(media["mp4"], frames=8)
    ref_score, ref_frames = reference.score_video(media["mp4"], 8)
    assert r.media_type == "video" and r.frame_count == 50
    assert r.frames_analyzed == 8 and r.frames_failed == 0
    assert [f.index for f in r.frame_predictions] == list(range(8))
    assert [f.frame_index for f in r.frame_predictions] == sorted(set(np.linspace(0, 49, 8, dtype=int).tolist()))
    np.testing.assert_allclose([f.score for f in r.frame_predictions], ref_frames, atol=1e-6)
    assert r.score == pytest.approx(ref_score, abs=1e-6)
    assert r.metrics["final_average_score"] == pytest.approx(ref_score, abs=1e-6)
    assert r.frame_predictions[3].timestamp == pytest.approx(r.frame_predictions[3].frame_index / 25)
    assert r.dimensions == {"width": 160, "height": 120} and r.fps == 25


def test_batch_size_does_not_change_scores(tiny_ckpt, media):
    a = Detector.from_dir(tiny_ckpt, device="cpu", batch_size=1).analyze(media["mp4"], frames=6)
    b = Detector.from_dir(tiny_ckpt, device="cpu", batch_size=6).analyze(media["mp4"], frames=6)
    np.testing.assert_allclose([f.score for f in a.frame_predictions], [f.score for f in b.frame_predictions],
                               atol=1e-6)


def test_video_progress_callback(tiny_detector, media):
    calls = []
    tiny_detector.analyze(media["mp4"], frames=10, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1] == (10, 10)


def test_a_short_video_reports_progress_as_it_goes(tiny_ckpt, media):
    """A video of one batch or less still moves a progress bar (several reports), and its scores do not
    depend on whether anyone watches."""
    det = Detector.from_dir(tiny_ckpt, device="cpu", batch_size=16)
    calls: list[tuple[int, int]] = []
    watched = det.analyze(media["mp4"], frames=8, progress=lambda d, t: calls.append((d, t)))
    assert len(calls) >= 3 and calls[-1] == (8, 8)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and all(t == 8 for _, t in calls)
    unwatched = det.analyze(media["mp4"], frames=8)
    assert [f.score for f in watched.frame_predictions] == [f.score for f in unwatched.frame_predictions]


def test_confident_pooling_option(tiny_detector, media):
    r = tiny_detector.analyze(media["mp4"], frames=5, pooling="confident")
    frame_scores = [f.score for f in r.frame_predictions]
    assert r.pooling == "confident" and r.score == pytest.approx(confident(frame_scores))
    assert r.metrics["final_average_score"] == pytest.approx(np.mean(frame_scores))


def test_confident_strategy_semantics():
    many_fakes = [0.95] * 20 + [0.5] * 20
    assert confident(many_fakes) == pytest.approx(0.95)
    assert get_pooling("mean")(many_fakes) == pytest.approx(0.725)
    mostly_real = [0.05] * 95 + [0.6] * 5
    assert confident(mostly_real) == pytest.approx(0.05)
    mixed = [0.3, 0.6, 0.9]
    assert confident(mixed) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="unknown pooling"):
        get_pooling("max")


def test_partly_corrupt_video_reports_failed_frames(tiny_detector, tmp_path):
    path = make_video(tmp_path / "c.avi", seconds=2, fps=10, codec="mjpeg", width=64, height=48)
    with av.open(str(path)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(path.read_bytes())
    for i in (3, 7, 12):
        pos, size = packets[i]
        data[pos:pos + size] = bytes(size)
    path.write_bytes(bytes(data))
    r = tiny_detector.analyze(path, frames=20)
    assert r.frames_failed == 3 and r.frames_analyzed == 17
    assert [f.frame_index for f in r.failed_frames] == [3, 7, 12]
    assert "3 of 20 sampled frames could not be decoded" in r.note
    assert all(0.0 <= f.score <= 1.0 for f in r.frame_predictions)


def test_bad_inputs_raise_typed_errors_never_a_score(tiny_detector, media, tmp_path):
    with pytest.raises(UnsupportedMediaError):
        tiny_detector.analyze(media["text"])
    with pytest.raises(EmptyMediaError):
        tiny_detector.analyze(media["empty"])
    data = media["mp4"].read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:200])
    with pytest.raises(CorruptMediaError):
        tiny_detector.analyze(tmp_path / "cut.mp4")


def test_analyze_many_keeps_order_and_survives_failures(tiny_detector, media):
    paths = [media["jpg"], media["text"], media["mp4"], media["png"], media["empty"], media["jpg"]]
    out = list(tiny_detector.analyze_many(paths, frames=4))
    assert [p for p, _ in out] == [str(p) for p in paths]
    kinds = [type(r).__name__ for _, r in out]
    assert kinds == ["ImageAnalysisResult", "UnsupportedMediaError", "VideoAnalysisResult",
                     "ImageAnalysisResult", "EmptyMediaError", "ImageAnalysisResult"]
    # batched images score the same as one at a time
    assert out[0][1].score == pytest.approx(tiny_detector.analyze(media["jpg"]).score, abs=1e-6)
    assert out[5][1].score == pytest.approx(out[0][1].score, abs=1e-6)


def test_threshold_changes_label_not_score(tiny_ckpt, media):
    d = Detector.from_dir(tiny_ckpt, device="cpu", threshold=0.0)
    r = d.analyze(media["jpg"])
    assert r.prediction == "FAKE" and r.threshold == 0.0 and r.confidence == pytest.approx(r.score)


def test_host_integration_example_works_as_written(tiny_ckpt, media):
    config = MFFMoEV1Config(class_name="MFFMoEDetectorV1", model_name="MFF-MOE-V1", model_path=str(tiny_ckpt) + "/",
                            isImage=True, isVideo=True, isAudio=False, video_frames_to_sample=6)
    detector = MFFMoEDetectorV1(config)
    detector.load()
    image_result = detector.analyze(media_path=str(media["jpg"]))
    assert image_result.prediction in ("REAL", "FAKE") and 0.5 <= image_result.confidence <= 1
    assert image_result.dimensions == {"width": 320, "height": 200}
    video_result = detector.analyze(media_path=str(media["mp4"]))
    assert video_result.frames_analyzed == 6
    assert isinstance(video_result.metrics["final_average_score"], float)
    for frame_pred in video_result.frame_predictions[:10]:
        assert f"Frame {frame_pred.index}: {frame_pred.score:.3f} ({frame_pred.prediction})"


def test_untrained_results_say_so(media):
    d = Detector.untrained(TINY_ROSTER, TINY_SIZE, device="cpu")
    r = d.analyze(media["jpg"])
    assert r.untrained and "UNTRAINED" in r.note


@pytest.mark.slow
def test_full_default_roster_matches_the_spec_algorithm(tmp_path_factory):
    """The seven official experts, loaded from the official layout, against a plain implementation of
    the spec (per-forward EMA swap, batch of 1, torchvision transforms), at a small input size."""
    size = 64
    d = make_random_checkpoint(tmp_path_factory.mktemp("full"), DEFAULT_ROSTER, size, "official", seed=7)
    img = make_image(d / "x.jpg", 200, 150, seed=5, quality=95)
    vid = make_video(d / "x.mp4", seconds=1.0, fps=10, width=96, height=64)
    ours = Detector.from_dir(d, device="cpu", batch_size=4)
    assert ours.info.roster == DEFAULT_ROSTER
    ref = ReferenceDetector(d, DEFAULT_ROSTER, size)
    r = ours.analyze(img)
    assert r.score == pytest.approx(ref.score_file(img), abs=1e-5)
    assert len(r.expert_scores) == 7
    v = ours.analyze(vid, frames=4)
    ref_score, ref_frames = ref.score_video(vid, 4)
    np.testing.assert_allclose([f.score for f in v.frame_predictions], ref_frames, atol=1e-5)
    assert v.score == pytest.approx(ref_score, abs=1e-5)


def _unreadable_run(detector, media, blocked):
    out = list(detector.analyze_many([media["jpg"], blocked, media["mp4"], media["png"]], frames=4))
    assert [p for p, _ in out] == [str(media["jpg"]), str(blocked), str(media["mp4"]), str(media["png"])]
    assert isinstance(out[1][1], UnreadableMediaError) and out[1][1].kind == "unreadable"
    assert [type(r).__name__ for _, r in out] == ["ImageAnalysisResult", "UnreadableMediaError",
                                                  "VideoAnalysisResult", "ImageAnalysisResult"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_analyze_many_survives_a_file_without_read_permission(tiny_detector, media, tmp_path):
    blocked = tmp_path / "secret.jpg"
    blocked.write_bytes(media["jpg"].read_bytes())
    blocked.chmod(0)
    try:
        _unreadable_run(tiny_detector, media, blocked)
    finally:
        blocked.chmod(0o644)


def test_analyze_many_survives_an_unreadable_file(tiny_detector, media, tmp_path, monkeypatch):
    """The same as a permission-denied file, also when run as root: opening it raises PermissionError."""
    import builtins

    blocked = tmp_path / "secret.jpg"
    blocked.write_bytes(media["jpg"].read_bytes())
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == str(blocked):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    _unreadable_run(tiny_detector, media, blocked)
    with pytest.raises(UnreadableMediaError):
        tiny_detector.analyze(blocked)


def test_unexpected_decoder_failure_is_a_typed_error(tiny_detector, media, monkeypatch):
    """A decoder raising something no typed error covers ends that file with UnexpectedDecodeError."""
    from mffmoe.media import source

    real = source.open_image

    def broken(path, *args, **kwargs):
        if str(path) == str(media["png"]):
            raise RuntimeError("decoder bug")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(source, "open_image", broken)
    out = dict(tiny_detector.analyze_many([media["png"], media["jpg"]]))
    assert isinstance(out[str(media["png"])], UnexpectedDecodeError) and "decoder bug" in str(out[str(media["png"])])
    assert out[str(media["jpg"])].media_type == "image"


def test_video_calls_are_even_and_a_streamed_engine_gets_few():
    """Frames per model call: equal calls (100 frames at batch 32: four of 25); a short video in
    SHORT_VIDEO_STEPS calls so its progress moves, but in one call on an engine that compiles its experts
    per call (each call costs a compile of the roster there)."""
    from mffmoe.inference.batching import SHORT_VIDEO_STEPS, useful_batch, video_step

    class Plain:
        min_useful_batch = max_useful_batch = None

    class Streamed:
        min_useful_batch, max_useful_batch = 32, None

    class OneAtATime:
        min_useful_batch, max_useful_batch = None, 4

    assert video_step(100, 32, Plain()) == 25 and video_step(100, 16, Plain()) == 15
    assert video_step(16, 16, Plain()) == 16 // SHORT_VIDEO_STEPS and video_step(1, 16, Plain()) == 1
    assert video_step(16, 32, Streamed()) == 16 and video_step(100, 32, Streamed()) == 25
    assert useful_batch(Streamed(), 4) == 32 and useful_batch(Streamed(), 64) == 64
    assert useful_batch(OneAtATime(), 16) == 4 and useful_batch(Plain(), 0) == 1
    from mffmoe.inference.batching import lookahead

    assert lookahead(32, Streamed()) == 32 and lookahead(32, Streamed(), faces=True) == 16
    assert lookahead(4, OneAtATime()) == 4 and lookahead(4, OneAtATime(), faces=True) == 2
    assert lookahead(16, Plain()) == 32 and lookahead(1, Plain()) == 4
