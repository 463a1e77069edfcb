"""The pointing game: a tiny roster trained on a planted-pattern task with the pattern at a random place;
the ensemble map's peak must lie inside the pattern's box for >= 90% of the fake test images, with the
gradient method (Grad-CAM) and the gradient-free one (occlusion)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mffmoe.engine.torch_engine import TorchEngine
from mffmoe.explain import explain_result
from mffmoe.inference.detector import Detector
from mffmoe.model.ensemble import build_model
from mffmoe.model.info import CheckpointInfo
from mffmoe.testing.media import pattern
from mffmoe.testing.planted import planted

SIZE, BOX = 128, 56          # input size; side of the planted square (Grad-CAM cells are 32 px here)
N_TRAIN, N_TEST, EPOCHS = 160, 30, 6
#: Two EfficientNets from different seeds: timm's test_convnext does not learn this task in a test's time
#: (Grad-CAM on ConvNeXt is exercised by the full-roster test).
ROSTER = ("test_efficientnet", "test_efficientnet")


def scene(rng: np.random.Generator, fake: bool) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """A textured picture; a fake carries a grating in a BOX x BOX square at a random place."""
    img = pattern(SIZE, SIZE, t=int(rng.integers(0, 200)), seed=int(rng.integers(0, 1_000_000))).astype(np.float32)
    img += rng.normal(0.0, 8.0, img.shape).astype(np.float32)
    box = None
    if fake:
        x, y = (int(v) for v in rng.integers(0, SIZE - BOX + 1, 2))
        img[y:y + BOX, x:x + BOX] += planted(BOX, BOX, amplitude=40.0)
        box = (x, y, x + BOX, y + BOX)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), box


def _normalised(images: np.ndarray) -> torch.Tensor:
    from mffmoe.media.preprocess import preprocess
    return torch.from_numpy(np.stack([preprocess(im, SIZE) for im in images]))


@pytest.fixture(scope="module")
def detector():
    rng = np.random.default_rng(0)
    pics = [scene(rng, fake=i % 2 == 1)[0] for i in range(N_TRAIN)]
    x = _normalised(np.stack(pics))
    y = torch.tensor([i % 2 for i in range(N_TRAIN)])
    torch.manual_seed(0)
    model = build_model(ROSTER, SIZE)
    model.train()
    opts = [torch.optim.AdamW(e.parameters(), lr=3e-3) for e in model.experts]
    for _ in range(EPOCHS):
        order = torch.randperm(N_TRAIN)
        for start in range(0, N_TRAIN, 16):
            idx = order[start:start + 16]
            xb = x[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb[flip] = xb[flip].flip(-1)
            for expert, opt in zip(model.experts, opts, strict=True):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(expert(xb), y[idx]).backward()
                opt.step()
    model.eval().requires_grad_(False)
    info = CheckpointInfo(source="trained-in-test", layout="untrained", roster=ROSTER, input_size=SIZE, ema=False)
    return Detector(TorchEngine(model, device="cpu"), info, crop="frame")


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("pointing")
    out = []
    for i in range(N_TEST):
        img, box = scene(rng, fake=True)
        path = d / f"fake_{i:02d}.png"
        Image.fromarray(img).save(path)
        out.append((path, box))
    return out


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_pointing_game(detector, fakes, method):
    hits, scores = 0, []
    for path, (left, top, right, bottom) in fakes:
        result = detector.analyze(path)
        scores.append(result.score)
        ex = explain_result(detector, path, result, method=method, grid=8, window=3)
        (item,) = ex.items
        assert ex.method == method and item.method == method and item.kind == "frame"
        assert item.peak is not None
        x, y = item.peak
        hits += left <= x < right and top <= y < bottom
    rate = hits / len(fakes)
    print(f"{method}: peak inside the pattern for {hits}/{len(fakes)}; mean fake score {np.mean(scores):.3f}")
    assert np.mean(scores) > 0.8, "the roster did not learn the task"
    assert rate >= 0.9, f"{method}: {hits}/{len(fakes)} peaks inside the pattern"


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
@pytest.mark.parametrize("crop", [(150, 40, 278, 168), (-40, -30, 88, 98)], ids=["inside", "leaving_the_frame"])
def test_a_face_crops_map_lines_up_with_the_crop_in_the_frame(detector, tmp_path, method, crop):
    """A pattern planted at a known place in a face crop (the crop square may leave the frame): the
    peak, in frame pixels, lies in the pattern's box in the frame, and the full-size map is the frame's
    size and zero outside the crop."""
    from mffmoe.explain import Placement, full_size_map
    from mffmoe.results import FaceResult

    rng = np.random.default_rng(3)
    width, height = 320, 240
    frame = pattern(width, height, seed=11).astype(np.float32) + rng.normal(0, 8.0, (height, width, 3))
    left, top = crop[0], crop[1]
    px, py = (left + 62, top + 50) if left >= 0 else (left + 60, top + 55)   # inside the frame either way
    frame[py:py + BOX, px:px + BOX] += planted(BOX, BOX, amplitude=40.0)
    path = tmp_path / "scene.png"
    Image.fromarray(np.clip(np.rint(frame), 0, 255).astype(np.uint8)).save(path)
    base = detector.analyze(path)
    face = FaceResult(box=[float(v) for v in crop], detector_score=1.0, crop_box=list(crop), score=0.9,
                      expert_scores=[0.9, 0.9], prediction="FAKE")
    result = base.model_copy(update={"faces": [face], "crop": "faces"})
    ex = explain_result(detector, path, result, method=method, grid=8, window=3, out_dir=tmp_path / "out")
    (item,) = ex.items
    assert item.kind == "face" and item.face == 0 and item.box == list(crop) and item.score == 0.9
    x, y = item.peak
    assert px <= x < px + BOX and py <= y < py + BOX, (item.peak, (px, py))
    full = full_size_map(item.map, Placement.crop(item.box, ex.width, ex.height))
    assert full.shape == (height, width)
    inside = np.zeros_like(full, dtype=bool)
    inside[max(0, crop[1]):crop[3], max(0, crop[0]):crop[2]] = True
    assert full[~inside].max() == 0 and full[inside].max() > 0.5
    fy, fx = np.unravel_index(int(np.argmax(full)), full.shape)
    assert px - 8 <= fx < px + BOX + 8 and py - 8 <= fy < py + BOX + 8
    overlay = Image.open(item.overlay)
    assert overlay.size == (width, height) and item.overlay.endswith("scene.face.0.png")
