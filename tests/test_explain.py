"""Explanations (mffmoe.explain) on random weights: shapes, placement, overlays, every engine, the full
roster, typed errors. The pointing game (trained roster) is in test_explain_pointing.py."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mffmoe.config import DEFAULT_ROSTER
from mffmoe.errors import ConfigError, MediaNotFoundError, MissingExtraError
from mffmoe.explain import Placement, explain_result, full_size_map
from mffmoe.explain.base import SMALL_MAP, WHAT_A_MAP_IS
from mffmoe.explain.cells import conv_grid
from mffmoe.explain.explainer import Explainer
from mffmoe.explain.gradcam import GradCAM
from mffmoe.explain.placement import CellGrid, peak, upsample
from mffmoe.inference.detector import Detector
from mffmoe.model.checkpoint import untrained_model
from mffmoe.results import FaceResult
from mffmoe.testing.checkpoints import TINY_ROSTER
from mffmoe.testing.media import make_image, make_video

SIZE = 64


@pytest.fixture(scope="module")
def det():
    return Detector.untrained(TINY_ROSTER, SIZE, engine="torch", crop="frame")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("explain_media")
    return {"png": make_image(d / "photo.png", 200, 150, seed=1),
            "mp4": make_video(d / "clip.mp4", seconds=1.0, fps=10, width=160, height=120, codec="libx264")}


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_image_map_shapes_and_full_size(det, files, method):
    result = det.analyze(files["png"])
    ex = explain_result(det, files["png"], result, method=method, experts=True)
    assert (ex.width, ex.height, ex.media_type, ex.method) == (200, 150, "image", method)
    assert ex.note == WHAT_A_MAP_IS and ex.roster == list(TINY_ROSTER)
    (item,) = ex.items
    m = np.asarray(item.map)
    assert m.shape == (SMALL_MAP, SMALL_MAP) and m.min() >= 0 and m.max() <= 1
    assert item.box == [0, 0, 200, 150] and item.score == result.score
    assert sum(item.weights) == pytest.approx(1.0, abs=1e-5)
    assert [e.expert for e in item.experts] == list(TINY_ROSTER)
    assert all(np.asarray(e.map).shape == (SMALL_MAP, SMALL_MAP) for e in item.experts)
    # the experts' scores of the explaining pass are the engine's
    assert [e.score for e in item.experts] == pytest.approx(result.expert_scores, abs=1e-5)
    full = full_size_map(item.map, Placement.frame(ex.width, ex.height))
    assert full.shape == (150, 200)
    if item.peak is not None:
        x, y = item.peak
        assert 0 <= x < 200 and 0 <= y < 150


def test_video_explains_the_most_suspicious_frames(det, files, tmp_path):
    result = det.analyze(files["mp4"], frames=6)
    ex = explain_result(det, files["mp4"], result, method="gradcam", frames=2, out_dir=tmp_path)
    top = sorted(result.frame_predictions, key=lambda f: -f.score)[:2]
    assert sorted(i.frame_index for i in ex.items) == sorted(f.frame_index for f in top)
    assert (ex.width, ex.height, ex.media_type) == (160, 120, "video")
    for item in ex.items:
        fp = next(f for f in result.frame_predictions if f.frame_index == item.frame_index)
        assert item.score == fp.score and item.timestamp == fp.timestamp
        assert item.overlay.endswith(f"clip.frame.{item.frame_index}.png")
        assert Image.open(item.overlay).size == (160, 120)


def test_overlay_png_has_the_original_size_and_a_legend(det, files, tmp_path):
    result = det.analyze(files["png"])
    ex = explain_result(det, files["png"], result, method="gradcam", out_dir=tmp_path / "new" / "dir")
    path = ex.items[0].overlay
    assert path == str(tmp_path / "new" / "dir" / "photo.frame.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (200, 150) and im.mode == "RGB"
        px = np.asarray(im)
    original = np.asarray(Image.open(files["png"]).convert("RGB"))
    assert (px[:8, :40] == 0).all(axis=-1).mean() > 0.3          # the title's black band (score, method)
    assert (px[:12, :80] > 200).all(axis=-1).any()                # light text on it
    assert (px[-6:, :] == 0).all(axis=-1).mean() > 0.2            # the legend's band at the bottom
    assert not np.array_equal(px[30:120], original[30:120])        # the map is drawn over the picture


def test_faces_use_the_crop_box_and_name_each_face(det, files, tmp_path):
    base = det.analyze(files["png"])
    faces = [FaceResult(box=[0, 0, 1, 1], detector_score=1.0, crop_box=box, score=s, expert_scores=[s, s],
                        prediction="FAKE") for box, s in (([120, 60, 220, 160], 0.7), ([-20, -10, 60, 70], 0.6))]
    result = base.model_copy(update={"faces": faces, "crop": "faces"})
    ex = explain_result(det, files["png"], result, method="occlusion", out_dir=tmp_path, grid=4, window=2)
    assert [(i.kind, i.face, i.box, i.score) for i in ex.items] == [
        ("face", 0, [120, 60, 220, 160], 0.7), ("face", 1, [-20, -10, 60, 70], 0.6)]
    assert [i.overlay.rsplit("/", 1)[1] for i in ex.items] == ["photo.face.0.png", "photo.face.1.png"]
    for item in ex.items:
        if item.peak is not None:   # inside the crop and inside the picture
            x, y = item.peak
            assert max(0, item.box[0]) <= x < min(200, item.box[2]) and max(0, item.box[1]) <= y < min(150, item.box[3])


def test_placement_is_pure_and_undoes_resize_and_crop():
    m = np.zeros((4, 4), dtype=np.float32)
    m[1, 2] = 1.0
    full = full_size_map(m, Placement.frame(80, 40))   # stretched: cells 20 x 10 px
    assert full.shape == (40, 80)
    assert np.unravel_index(np.argmax(full), full.shape) in {(14, 49), (14, 50), (15, 49), (15, 50)}
    assert peak(m, Placement.frame(80, 40)) == (50, 15)
    crop = Placement.crop([-20, -20, 20, 20], 30, 30)   # a 40 px square, half outside
    full = full_size_map(np.ones((8, 8)), crop)
    assert full.shape == (30, 30) and full[:20, :20].min() == 1 and full[20:].max() == 0 and full[:, 20:].max() == 0
    m = np.zeros((8, 8))
    m[0, 0], m[6, 6] = 1.0, 0.5                          # the top cell lies outside the picture
    assert peak(m, crop) == (12, 12)
    assert peak(np.zeros((3, 3)), crop) is None


def test_cell_grids_follow_the_convolutions():
    model, _ = untrained_model(("test_efficientnet", "test_convnext"), SIZE)
    cam = GradCAM(model)
    cam.maps(np.zeros((1, 3, SIZE, SIZE), dtype=np.float32))
    eff, convnext = cam.cell_grids()
    assert eff == CellGrid(32.0, 0.0)          # padded 3x3 stride-2 convolutions: cell j at 32 j
    assert convnext == CellGrid(32.0, 15.5)    # patchify 4x4/4, then 2x2/2 downsamplers: at 32 j + 15.5
    same = torch.nn.Conv2d(3, 3, 3, stride=2, padding=0)
    assert conv_grid([(same, 8, 4)]) == CellGrid(2.0, 1.0)
    up = upsample(np.array([[0.0, 1.0], [0.0, 0.0]]), 64, CellGrid(32.0, 0.0))
    assert up[0, 32] == pytest.approx(1.0) and up[0, 16] == pytest.approx(0.5)


def test_the_full_default_roster_gives_maps_for_all_seven_experts(files):
    det = Detector.untrained(DEFAULT_ROSTER, 128, engine="torch", crop="frame")
    result = det.analyze(files["png"])
    for method, options in (("gradcam", {}), ("occlusion", {"grid": 2, "window": 1})):
        ex = explain_result(det, files["png"], result, method=method, experts=True, **options)
        (item,) = ex.items
        assert [e.expert for e in item.experts] == list(DEFAULT_ROSTER)
        assert len(item.weights) == 7 and sum(item.weights) == pytest.approx(1.0, abs=1e-5)
        if method == "gradcam":
            assert all(np.asarray(e.map).max() > 0 for e in item.experts), "an expert's map is empty"
            assert [e.score for e in item.experts] == pytest.approx(result.expert_scores, abs=1e-4)


def test_an_exported_engine_is_explained_with_the_same_weights(tiny_ckpt, files):
    """Grad-CAM on an exported engine takes the feature stages from OpenVINO graphs (built once, cached
    with the weights) and differentiates the torch heads; occlusion runs on the engine itself. The maps
    agree with the torch engine's."""
    from mffmoe.explain.explainer import _EXPLAINERS
    from mffmoe.explain.features import FeatureGraphs

    ov = Detector.from_dir(tiny_ckpt, engine="openvino", crop="frame")
    pt = Detector.from_dir(tiny_ckpt, engine="torch", crop="frame")
    result = ov.analyze(files["png"])
    for method in ("gradcam", "occlusion"):
        a = explain_result(ov, files["png"], result, method=method, grid=4, window=2).items[0]
        b = explain_result(pt, files["png"], pt.analyze(files["png"]), method=method, grid=4, window=2).items[0]
        assert np.allclose(a.map, b.map, atol=2e-3) and a.weights == pytest.approx(b.weights, abs=1e-4)
    gradcam = _EXPLAINERS[ov][("gradcam", 4, 2)].saliency()
    assert isinstance(gradcam.features, FeatureGraphs)
    assert gradcam.features.resident and len(gradcam.features.compiled) == len(ov.engine.roster)
    # a one-shot job's engine holds one expert at a time: so do its feature graphs, with the same maps
    lean = Detector.from_dir(tiny_ckpt, engine="openvino", crop="frame", engine_options={"resident": False})
    c = explain_result(lean, files["png"], lean.analyze(files["png"]), method="gradcam", grid=4, window=2).items[0]
    streamed = _EXPLAINERS[lean][("gradcam", 4, 2)].saliency().features
    assert not streamed.resident and streamed.compiled == []
    assert c.map == explain_result(ov, files["png"], result, method="gradcam", grid=4, window=2).items[0].map
    assert list(tiny_ckpt.glob(".mffmoe-cache/*/explain-openvino/features.json"))


def test_auto_is_gradcam_when_captum_is_there(det, files):
    ex = explain_result(det, files["png"], det.analyze(files["png"]))
    assert ex.method == "gradcam" and "auto" in ex.method_reason


def test_bad_inputs_give_typed_errors(det, files, tmp_path, monkeypatch):
    result = det.analyze(files["png"])
    with pytest.raises(ConfigError, match="unknown explanation method"):
        explain_result(det, files["png"], result, method="lime")
    with pytest.raises(ConfigError, match="at least 1"):
        explain_result(det, files["png"], result, frames=0)
    with pytest.raises(MediaNotFoundError):
        explain_result(det, tmp_path / "gone.png", result)
    other = make_image(tmp_path / "other.png", 64, 64, seed=3)
    with pytest.raises(ConfigError, match="not this file's result"):
        explain_result(det, other, result)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        explain_result(det, files["png"], result, out_dir=tmp_path / "file")
    with pytest.raises(ConfigError, match="cannot explain"):
        explain_result(det, files["png"], {"score": 0.5})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="window"):
        explain_result(det, files["png"], result, method="occlusion", grid=2, window=3)
    with pytest.raises(ConfigError):
        Placement.crop([10, 10, 5, 20], 30, 30)
    with pytest.raises(ConfigError):
        full_size_map([[float("nan")]], Placement.frame(4, 4))
    monkeypatch.setitem(sys.modules, "captum", None)   # captum missing: a typed error naming the extra
    with pytest.raises(MissingExtraError, match=r"mffmoe\[explain\]"):
        Explainer(det, "gradcam").saliency()
    assert Explainer(det, "auto").method == "occlusion"


def test_video_faces_are_explained_by_their_crop_boxes(det, files):
    result = det.analyze(files["mp4"], frames=4)
    top = max(result.frame_predictions, key=lambda f: f.score)
    face = FaceResult(box=[0, 0, 1, 1], detector_score=1.0, crop_box=[40, 20, 120, 100], score=0.8,
                      expert_scores=[0.8, 0.8], prediction="FAKE")
    frames = [fp.model_copy(update={"faces": [face] if fp is top else None}) for fp in result.frame_predictions]
    result = result.model_copy(update={"frame_predictions": frames, "crop": "faces"})
    ex = explain_result(det, files["mp4"], result, method="gradcam", frames=1)
    (item,) = ex.items
    assert (item.kind, item.face, item.frame_index, item.box, item.score) == ("face", 0, top.frame_index,
                                                                              [40, 20, 120, 100], 0.8)


def test_importing_the_package_costs_nothing():
    """Without an explanation asked for, nothing heavy is imported (the scoring path never imports it)."""
    import subprocess

    code = ("import sys, mffmoe.explain, mffmoe.inference.detector; "
            "print(sorted(m for m in ('torch', 'captum', 'mffmoe.explain.gradcam', 'mffmoe.explain.explainer') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "captum" not in out and "mffmoe.explain" not in out
