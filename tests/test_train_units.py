"""Training building blocks: EMA arithmetic, augmentations, data listing, unfolded checkpoint loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mffmoe.datasets import LabeledPath, read_dataset
from mffmoe.errors import DatasetError
from mffmoe.model.checkpoint import load_unfolded, load_weights
from mffmoe.model.ema import ExponentialMovingAverage
from mffmoe.testing.checkpoints import TINY_ROSTER, make_random_checkpoint
from mffmoe.train.augment import AUGMENTATIONS, Augment, parse_augmentations
from mffmoe.train.data import Sample, SampleDataset, split
from mffmoe.train.trainer import TrainConfig, Trainer


def test_ema_matches_the_formula_with_adaptive_decay():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    ema = ExponentialMovingAverage([p], decay=0.995)
    shadow = p.detach().clone().numpy()
    values = np.random.default_rng(0).normal(size=(1500, 2))
    for t, v in enumerate(values, 1):
        with torch.no_grad():
            p.copy_(torch.from_numpy(v))
        ema.update()
        d = min(0.995, (1 + t) / (10 + t))           # the spec's adaptive decay
        shadow = d * shadow + (1 - d) * v             # theta~_t = d theta~_{t-1} + (1 - d) theta_t
        if t in (1, 10, 100, 1500):
            np.testing.assert_allclose(ema.shadow_params[0].numpy(), shadow, rtol=0, atol=1e-12)
    assert ema.num_updates == 1500
    assert ema.current_decay() == pytest.approx((1 + 1501) / (10 + 1501))  # the next update's decay


def test_trainer_step_updates_each_ema_after_its_optimizer_step(tmp_path):
    cfg = TrainConfig(data=str(tmp_path), out=str(tmp_path / "o"), experts=list(TINY_ROSTER), input_size=32,
                      lr=1e-2, augment=[])
    trainer = Trainer(cfg, device="cpu", workers=0)
    from mffmoe.model.ensemble import build_model
    from mffmoe.train.data import collate
    torch.manual_seed(0)
    model = build_model(TINY_ROSTER, 32).train()
    experts = list(model.experts)
    opts = [torch.optim.AdamW(e.parameters(), lr=1e-2) for e in experts]
    scalers = [torch.amp.GradScaler("cuda", enabled=False) for _ in experts]
    emas = [ExponentialMovingAverage(e.parameters(), decay=0.995) for e in experts]
    batch = collate([(torch.randn(3, 32, 32), i % 2, i, None) for i in range(4)])
    for step in (1, 2):
        before = [[s.clone() for s in ema.shadow_params] for ema in emas]
        losses = trainer._step(experts, opts, scalers, emas, batch)
        assert np.isfinite(losses).all()
        d = min(0.995, (1 + step) / (10 + step))
        for expert, ema, old in zip(experts, emas, before, strict=True):
            assert ema.num_updates == step
            params = list(expert.parameters())
            moved = sum(not torch.equal(p, o) for p, o in zip(params, old, strict=True))
            assert moved > len(params) // 2  # the optimizer stepped before the EMA update
            for s, p, o in zip(ema.shadow_params, params, old, strict=True):
                torch.testing.assert_close(s, d * o + (1 - d) * p.detach(), rtol=1e-6, atol=1e-7)


def test_augmentations_are_seeded_and_keep_size():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    for name, (fn, _) in AUGMENTATIONS.items():
        out = fn(img, np.random.default_rng(1))
        assert out.size == img.size and out.mode == "RGB", name
        assert not np.array_equal(np.asarray(out), np.asarray(img)), name
    aug = Augment(parse_augmentations(None))
    a = [np.asarray(aug(img, np.random.default_rng([0, 3, i]))) for i in range(6)]
    b = [np.asarray(aug(img, np.random.default_rng([0, 3, i]))) for i in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert len({x.tobytes() for x in a}) > 1
    assert parse_augmentations("none") == () and parse_augmentations("jpeg,hflip") == ("hflip", "jpeg")
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_augmentations("hflip,rotate")


def test_sample_dataset_without_augmentation_is_the_detector_preprocessing(tmp_path):
    from mffmoe.media.image import load_image
    from mffmoe.media.preprocess import preprocess
    from mffmoe.testing.media import make_image
    path = make_image(tmp_path / "a.jpg", 90, 70, seed=3)
    x, label, i, err = SampleDataset([Sample(str(path), 1, str(path))], 64)[(0, 0)]
    assert err is None and label == 1 and i == 0
    assert torch.equal(x, torch.from_numpy(preprocess(load_image(path), 64)))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    x, _, _, err = SampleDataset([Sample(str(tmp_path / "bad.png"), 0, "g")], 64)[(0, 0)]
    assert x is None and "CorruptMediaError" in err


def test_read_dataset_folder_and_csv(tmp_path):
    for name in ("real/a.png", "real/sub/b.png", "fake/c.png", "fake/.hidden.png"):
        (tmp_path / "d" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / name).write_bytes(b"x")
    items = read_dataset(tmp_path / "d")
    assert [(p.rsplit("/d/", 1)[1], lab) for p, lab in ((i.path, i.label) for i in items)] == [
        ("real/a.png", 0), ("real/sub/b.png", 0), ("fake/c.png", 1)]
    csv = tmp_path / "list.csv"
    csv.write_text("Path,label,source\nd/real/a.png,REAL,x\n/abs/f.mp4,1,y\nd/fake/c.png, fake ,z\n")
    items = read_dataset(csv)
    assert [(i.path, i.label) for i in items] == [(str(tmp_path / "d/real/a.png"), 0), ("/abs/f.mp4", 1),
                                                   (str(tmp_path / "d/fake/c.png"), 1)]


@pytest.mark.parametrize("text,match", [("path,label\na.png,maybe\n", r"list.csv:2: label 'maybe'"),
                                        ("file,class\na.png,1\n", "path,label"),
                                        ("path,label\n", "no rows"),
                                        ("path,label\n,1\n", "empty path")])
def test_bad_csv_is_a_typed_error(tmp_path, text, match):
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(DatasetError, match=match) as e:
        read_dataset(tmp_path / "list.csv")
    assert e.value.kind == "dataset_error"


def test_folder_without_class_dirs_and_impossible_split(tmp_path):
    with pytest.raises(DatasetError, match="real/ and fake/"):
        read_dataset(tmp_path)

    with pytest.raises(DatasetError, match="validation"):
        split([LabeledPath("a", 0), LabeledPath("b", 1), LabeledPath("c", 1)], 0.3, 0)
    items = [LabeledPath(str(i), i % 2) for i in range(20)]
    train, val = split(items, 0.25, 0)
    assert len(val) == 5 and {i.label for i in val} == {0, 1} and not set(train) & set(val)


@pytest.mark.parametrize("layout", ["official", "upstream"])
def test_load_unfolded_gives_raw_weights_and_ema_states(tmp_path, layout):
    make_random_checkpoint(tmp_path, TINY_ROSTER, 32, layout=layout, seed=1)
    raw, emas, info = load_unfolded(tmp_path)
    folded, _ = load_weights(tmp_path)
    name = "MFF-MoE-v1" if layout == "official" else None
    pth = torch.load(tmp_path / (f"{name}.pth" if name else "weight.pth"), weights_only=True)
    state = torch.load(tmp_path / (f"{name}.state" if name else "ema.state"), weights_only=True)
    prefix = "" if layout == "official" else "experts."
    for k, v in raw.state_dict().items():
        assert torch.equal(v, pth[k if layout == "official" else k.removeprefix(prefix)]), k
    assert len(emas) == len(TINY_ROSTER) and info.ema
    for i, (expert, ema) in enumerate(zip(folded.experts, emas, strict=True)):
        assert ema["num_updates"] == state[i]["num_updates"]
        for p, s, s_file in zip(expert.parameters(), ema["shadow_params"], state[i]["shadow_params"], strict=True):
            assert torch.equal(s, s_file) and torch.equal(p, s)  # the folded model is the shadows
    assert any(not torch.equal(a, b) for a, b in zip(raw.parameters(), folded.parameters(), strict=True))


def test_load_unfolded_without_state_needs_permission(tmp_path):
    from mffmoe.errors import MissingEMAError
    make_random_checkpoint(tmp_path, TINY_ROSTER, 32, with_ema=False)
    with pytest.raises(MissingEMAError):
        load_unfolded(tmp_path)
    _, emas, info = load_unfolded(tmp_path, allow_missing_ema=True)
    assert emas is None and not info.ema


# --- face crops (--crop faces|auto) ----------------------------------------------------------------
class _CountingDetector:
    """A stand-in face detector: one face at a fixed place in images at least 48 px wide, none in smaller
    ones; counts its calls."""

    calls = 0

    def detect(self, rgb):
        from mffmoe.faces.base import Face
        type(self).calls += 1
        return [Face((8.0, 8.0, 40.0, 40.0), 0.9)] if rgb.shape[1] >= 48 else []

    def close(self):
        pass


def test_face_samples_are_cached_crops_and_frames_without_faces_stay_whole(tmp_path):
    from mffmoe.faces.base import Face
    from mffmoe.faces.crops import crop_face
    from mffmoe.faces.finder import FaceFinder
    from mffmoe.media.image import load_image
    from mffmoe.testing.media import make_image
    from mffmoe.testing.planted import synth_frame, write_video
    from mffmoe.train.data import FaceCropping, prepare_samples

    big = make_image(tmp_path / "big.png", 64, 64, seed=1)
    small = make_image(tmp_path / "small.png", 32, 32, seed=2)
    rng = np.random.default_rng(0)
    video = write_video(tmp_path / "v.mp4", [synth_frame(rng, 64, 64, True, t=t) for t in range(6)])
    items = [LabeledPath(str(big), 1), LabeledPath(str(small), 0), LabeledPath(str(video), 1)]
    finder = FaceFinder(_CountingDetector(), margin=1.3)  # type: ignore[arg-type]
    faces = FaceCropping(finder, tmp_path / "faces")
    samples, failures = prepare_samples(items, 3, tmp_path / "frames", workers=2, faces=faces)
    assert failures == [] and _CountingDetector.calls == 1 + 1 + 3
    by_group = {}
    for s in samples:
        by_group.setdefault(s.group, []).append(s)
    (b,), (w,) = by_group[str(big)], by_group[str(small)]
    assert b.face == 0 and b.source.startswith(str(tmp_path / "faces")) and b.label == 1
    face = Face((8.0, 8.0, 40.0, 40.0), 0.9)
    assert np.array_equal(np.asarray(Image.open(b.source)), crop_face(np.asarray(load_image(big)), face, 1.3).pixels)
    assert (w.source, w.face) == (str(small), None)  # no face: the whole frame, as inference scores it
    v = by_group[str(video)]
    assert [s.face for s in v] == [0, 0, 0] and len({s.frame_index for s in v}) == 3
    # found once: a second preparation reads the cached crops
    again, _ = prepare_samples(items, 3, tmp_path / "frames", workers=1, faces=faces)
    assert again == samples and _CountingDetector.calls == 5


def test_validation_pools_the_faces_of_a_frame_by_their_highest_score():
    from mffmoe.train.trainer import _pool_faces
    labels, groups = np.array([1, 1, 1, 0]), np.array(["a", "a", "a", "b"])
    frames = np.array([-1, -1, 5, -1])
    probs = np.array([[0.2, 0.9], [0.7, 0.1], [0.4, 0.4], [0.3, 0.3]])
    lab, grp, pooled = _pool_faces(labels, groups, frames, probs)
    rows = {(g, tuple(p)) for g, p in zip(grp, pooled, strict=True)}
    assert rows == {("a", (0.7, 0.9)), ("a", (0.4, 0.4)), ("b", (0.3, 0.3))} and sorted(lab) == [0, 1, 1]


def test_the_crop_mode_defaults_to_the_inits_and_is_checked_in_the_manifest(tmp_path):
    import json

    from mffmoe.errors import CheckpointFormatError
    from mffmoe.model.checkpoint import read_info, trained_face_options
    from mffmoe.train.trainer import resolve_config
    init = make_random_checkpoint(tmp_path / "init", TINY_ROSTER, 32)
    base = {"data": str(tmp_path), "experts": list(TINY_ROSTER)}
    assert resolve_config({**base, "out": str(tmp_path / "a")}, resume=False).crop == "frame"
    assert resolve_config({**base, "out": str(tmp_path / "b"), "init": str(init)}, resume=False).crop == "auto"
    manifest = init / "mffmoe.json"
    data = json.loads(manifest.read_text()) if manifest.exists() else {"roster": list(TINY_ROSTER), "input_size": 32}
    manifest.write_text(json.dumps({**data, "crop": "frame"}))
    assert resolve_config({**base, "out": str(tmp_path / "c"), "init": str(init)}, resume=False).crop == "frame"
    assert resolve_config({**base, "out": str(tmp_path / "d"), "init": str(init), "crop": "faces"},
                          resume=False).crop == "faces"
    manifest.write_text(json.dumps({**data, "crop": "faces", "face_margin": 5, "align": True}))
    with pytest.raises(CheckpointFormatError, match="face_margin"):
        trained_face_options(read_info(init))
    manifest.write_text(json.dumps({**data, "crop": "faces", "face_margin": 1.5, "align": True}))
    assert trained_face_options(read_info(init)) == {"face_margin": 1.5, "align": True}
