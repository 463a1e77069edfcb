"""Probing by content, image decoding in every mode, the spec's transform, and seeking video sampling."""
from __future__ import annotations

import shutil

import av
import numpy as np
import pytest
from PIL import Image

from mffmoe.config import IMAGENET_MEAN, IMAGENET_STD
from mffmoe.errors import (
    CorruptMediaError,
    DecompressionBombError,
    EmptyMediaError,
    MediaNotFoundError,
    UnsupportedMediaError,
)
from mffmoe.media.image import load_image, to_rgb
from mffmoe.media.preprocess import preprocess, spec_transform
from mffmoe.media.probe import MediaKind, probe_kind
from mffmoe.media.video import SEEK_THRESHOLD, VideoSampler, sample_indices
from mffmoe.testing.media import make_image, make_video, pattern


# --- probing --------------------------------------------------------------------------------------
def test_type_is_judged_by_content_not_extension(media, tmp_path):
    fake_mp4 = shutil.copy(media["jpg"], tmp_path / "looks_like.mp4")
    fake_jpg = shutil.copy(media["mp4"], tmp_path / "looks_like.jpg")
    no_ext = shutil.copy(media["png"], tmp_path / "noext")
    assert probe_kind(fake_mp4) is MediaKind.IMAGE
    assert probe_kind(fake_jpg) is MediaKind.VIDEO
    assert probe_kind(no_ext) is MediaKind.IMAGE


def test_probe_errors(media, tmp_path):
    with pytest.raises(UnsupportedMediaError, match="not an image or a video"):
        probe_kind(media["text"])
    with pytest.raises(EmptyMediaError):
        probe_kind(media["empty"])
    with pytest.raises(MediaNotFoundError):
        probe_kind(tmp_path / "missing.jpg")


@pytest.mark.parametrize("codec", ["libx264", "mjpeg"])
def test_probe_videos_without_known_extension(tmp_path, codec):
    p = make_video(tmp_path / "v", seconds=0.4, codec=codec, width=64, height=48)
    assert probe_kind(p) is MediaKind.VIDEO


# --- images ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "LA", "CMYK", "1", "I;16", "I", "F", "YCbCr"])
def test_every_mode_becomes_rgb(mode):
    base = Image.fromarray(pattern(40, 30, seed=3))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    elif mode == "I":
        img = Image.fromarray(np.asarray(base.convert("L"), dtype=np.int32) * 257)
    elif mode == "F":
        img = Image.fromarray(np.asarray(base.convert("L"), dtype=np.float32) / 255.0)
    else:
        img = base.convert(mode)
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (40, 30)
    if mode in ("I;16", "I", "F"):  # high bit depth is scaled, not clipped to white
        np.testing.assert_allclose(np.asarray(out)[..., 0], np.asarray(base.convert("L")), atol=1)


def test_16bit_png_file_is_scaled(tmp_path):
    grey = np.linspace(0, 65535, 64 * 32, dtype=np.uint16).reshape(32, 64)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    out = np.asarray(load_image(tmp_path / "deep.png"))
    assert out.min() == 0 and out.max() == 255 and 100 < out.mean() < 155


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(pattern(60, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    img.save(tmp_path / "o.jpg", exif=exif)
    assert load_image(tmp_path / "o.jpg").size == (20, 60)


def test_truncated_image_is_a_typed_error(media, tmp_path):
    data = media["jpg"].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptMediaError, match="truncated or undecodable"):
        load_image(tmp_path / "cut.jpg")


def test_decompression_bomb_is_refused(tmp_path):
    make_image(tmp_path / "big.png", 300, 300)
    with pytest.raises(DecompressionBombError, match="exceeds the limit"):
        load_image(tmp_path / "big.png", max_pixels=50_000)
    # a real bomb: 15000 x 15000 bilevel PNG is tiny on disk but 225 MP decoded
    Image.new("1", (15000, 15000)).save(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 200_000
    with pytest.raises(DecompressionBombError):
        load_image(tmp_path / "bomb.png")


# --- preprocessing --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(720, 1280), (333, 201), (512, 512), (50, 900), (1080, 1920)])
def test_preprocess_equals_spec_transform(shape):
    rng = np.random.default_rng(sum(shape))
    img = Image.fromarray(rng.integers(0, 256, shape + (3,), dtype=np.uint8))
    ours = preprocess(img, 512)
    spec = spec_transform(512)(img).numpy()
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
    assert ours.shape == spec.shape == (3, 512, 512)
    assert np.abs(ours - spec).max() <= 1e-5


@pytest.mark.parametrize("shape, size", [((300, 300), 224), ((720, 1280), 512), ((100, 80), 64)])
def test_preprocess_is_the_exact_resize(shape, size):
    """Pillow's float resize is closer to the exact (float64) result than torch's float32 kernel: at
    300 -> 224 torch's own rounding reaches 1.2e-5, ours stays at float rounding."""
    import torch

    rng = np.random.default_rng(size)
    arr = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    x = torch.from_numpy(arr.astype(np.float64) / 255).permute(2, 0, 1)[None]
    exact = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=True)[0].numpy()
    mean, std = np.array(IMAGENET_MEAN).reshape(3, 1, 1), np.array(IMAGENET_STD).reshape(3, 1, 1)
    assert np.abs(preprocess(arr, size) - (exact - mean) / std).max() <= 2e-6


def test_preprocess_accepts_arrays_and_small_sizes():
    arr = pattern(100, 80)
    a = preprocess(arr, 64)
    b = spec_transform(64)(Image.fromarray(arr)).numpy()
    assert np.abs(a - b).max() <= 1e-5


# --- video sampling -------------------------------------------------------------------------------
def test_sample_indices_follow_the_host_rule():
    for total, n in [(1, 100), (7, 100), (100, 100), (250, 100), (9000, 16), (101, 3)]:
        expected = sorted(set(np.linspace(0, total - 1, min(total, n), dtype=int).tolist()))
        assert sample_indices(total, n) == expected
    assert sample_indices(0, 10) == []


def _sequential(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("codec", ["libx264", "libx265", "libvpx-vp9", "mjpeg"])
def test_seeking_sampler_returns_exactly_the_host_frames(tmp_path, codec):
    # sparse targets over a long GOP structure: the sampler must seek, and land on the right frames
    path = make_video(tmp_path / "v", seconds=24, fps=25, width=96, height=64, codec=codec, gop=48)
    seq = _sequential(path)
    with VideoSampler(path, 7) as sampler:
        frames = list(sampler)
        assert sampler.total == len(seq) == 600
    assert sampler.indices == sample_indices(600, 7)
    assert (np.diff(sampler.indices) > SEEK_THRESHOLD).all()  # really exercised seeking
    assert [f.frame_index for f in frames] == sampler.indices
    for f in frames:
        assert f.error is None
        np.testing.assert_array_equal(f.image, seq[f.frame_index])
        assert f.timestamp == pytest.approx(f.frame_index / 25, abs=1e-6)


def test_dense_sampling_decodes_forward(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=3, fps=20, width=64, height=48)
    seq = _sequential(path)
    with VideoSampler(path, 100) as sampler:
        frames = list(sampler)
    assert [f.frame_index for f in frames] == list(range(60))
    for f in frames:
        np.testing.assert_array_equal(f.image, seq[f.frame_index])


def test_missing_frame_count_is_estimated(tmp_path):
    path = make_video(tmp_path / "v", seconds=2, fps=25, width=64, height=48, codec="libvpx-vp9")
    with VideoSampler(path, 10) as sampler:
        assert sampler.info.frame_count is None  # WebM does not store it
        frames = list(sampler)
    assert sampler.total == 50 and len(frames) == 10


def test_wrong_frame_count_is_corrected(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=4, fps=25, width=64, height=48, gop=10)
    seq = _sequential(path)
    with VideoSampler(path, 10) as sampler:
        sampler.total = 300  # as if the container claimed 300 frames for its 100
        sampler.indices = sample_indices(300, 10)
        frames = list(sampler)
        assert sampler.count_exact and sampler.total == 100
        assert sampler.indices == sample_indices(100, 10)
    by_index = {f.frame_index: f for f in frames if f.error is None}
    for i in sampler.indices:
        np.testing.assert_array_equal(by_index[i].image, seq[i])


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    plain = make_video(tmp_path / "plain.mp4", seconds=0.4, fps=10, width=64, height=32)
    rotated = make_video(tmp_path / "rot.mp4", seconds=0.4, fps=10, width=64, height=32, rotation=rotation)
    with VideoSampler(plain, 2) as s:
        a = [f.image for f in s]
    with VideoSampler(rotated, 2) as s:
        b = [f.image for f in s]
        assert s.info.rotation % 360 == rotation % 360
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(y, np.rot90(x, k=rotation // 90))


def test_not_a_video_container(media):
    with pytest.raises((CorruptMediaError, UnsupportedMediaError)):
        VideoSampler(media["text"], 5)


def test_text_with_an_image_extension_is_unsupported(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_bytes(b"hello, this is plain text and not a picture\n" * 20)
    with pytest.raises(UnsupportedMediaError):
        probe_kind(p)


def test_frames_over_a_quarter_megapixel_are_resized_in_strips_with_the_direct_resizes_pixels(monkeypatch):
    """A 720p or 1080p frame is resized in row strips (never a whole float copy: 25 MB at 1080p): the same
    pixels as the direct resize, and within 1e-6 of it on other shapes."""
    from mffmoe.media import preprocess as pre

    rng = np.random.default_rng(0)
    calls: list[int] = []
    real = pre.resize_in_strips
    monkeypatch.setattr(pre, "resize_in_strips", lambda image, size, *a: calls.append(size) or real(image, size, *a))
    for (h, w), exact in (((1080, 1920), True), ((1000, 1500), False), ((720, 1280), True), ((1280, 720), False),
                          ((400, 600), True)):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        direct = pre.normalize(pre._resize(pre._to_float(arr), 64, 64))
        got = pre.preprocess(arr, 64)
        assert np.array_equal(got, direct) if exact else np.abs(got - direct).max() < 1e-6
    assert calls == [64, 64, 64, 64]  # 400x600 (0.24 MP) went the direct way
