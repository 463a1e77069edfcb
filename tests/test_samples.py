"""Generated pictures (`media.samples`): deterministic, photograph-like enough that statistics measured on
them (random checkpoints' BatchNorm, int8 calibration) cover real photographs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mffmoe.media.preprocess import preprocess
from mffmoe.media.samples import SHAPES, leaves_frame, natural_batch, natural_frame, sample_batch, sample_frame
from mffmoe.testing import checkpoints


def _edges(a: np.ndarray) -> float:
    """Mean absolute difference between horizontal neighbours: fine texture and sharp edges."""
    g = a.astype(np.float32).mean(axis=-1)
    return float(np.abs(np.diff(g, axis=1)).mean())


def test_leaves_frames_are_deterministic_and_differ_by_seed() -> None:
    a, b, c = leaves_frame(320, 200, seed=4), leaves_frame(320, 200, seed=4), leaves_frame(320, 200, seed=5)
    assert a.shape == (200, 320, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_leaves_frames_have_the_texture_sine_frames_lack() -> None:
    leaves = np.mean([_edges(leaves_frame(640, 480, seed=s)) for s in range(4)])
    sines = np.mean([_edges(sample_frame(640, 480, t=s, seed=s)) for s in range(4)])
    assert leaves > 3 * sines, (leaves, sines)


def test_natural_frames_alternate_kinds_and_shapes() -> None:
    frames = [natural_frame(i, seed=9) for i in range(2 * len(SHAPES))]
    assert [f.shape[1::-1] for f in frames[::2]] == list(SHAPES)
    assert np.array_equal(frames[0], sample_frame(*SHAPES[0], t=9, seed=9))
    assert np.array_equal(frames[1], leaves_frame(*SHAPES[0], seed=10))
    batch = natural_batch(4, 32, seed=9)
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == np.float32
    assert np.array_equal(batch[1], preprocess(frames[1], 32))


def _photographs(size: int) -> torch.Tensor:
    skdata = pytest.importorskip("skimage.data")
    grey = [skdata.camera(), skdata.grass(), skdata.brick()]
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    photos += [np.repeat(g[..., None], 3, axis=-1) for g in grey]
    return torch.from_numpy(np.stack([preprocess(p, size) for p in photos]))


def _logit_range(monkeypatch: pytest.MonkeyPatch, images, x: torch.Tensor) -> float:
    import timm

    monkeypatch.setattr(checkpoints, "natural_batch", images)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=2)
    checkpoints.measure_batchnorm(model, x.shape[-1], n=16, seed=checkpoints.BN_SEED)
    with torch.no_grad():
        z = model(x)
    return float((z[:, 1] - z[:, 0]).abs().max())


def test_batchnorm_measured_on_natural_batches_keeps_photographs_in_range(monkeypatch) -> None:
    """A random EfficientNet-B0 whose statistics come from `natural_batch` gives photographs logits a
    trained head could give; measured on the smooth sine frames alone, photographs' texture drives the
    same network's logits into the hundreds and more (why `leaves_frame` exists)."""
    x = _photographs(128)
    natural = _logit_range(monkeypatch, natural_batch, x)
    smooth = _logit_range(monkeypatch, lambda n, size, seed=0: sample_batch(n, size, seed=seed), x)
    assert natural < 20, natural
    assert smooth > 10 * natural, (smooth, natural)
