"""Hostile media: a video whose codec has no decoder, and a huge image under the pixel cap."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mffmoe.cli import app
from mffmoe.errors import MFFMoEError, UnexpectedDecodeError, UnsupportedMediaError
from mffmoe.media import source
from mffmoe.media.source import open_media
from mffmoe.scan.decode import DecodeConfig
from mffmoe.scan.local_runner import LocalRunner
from mffmoe.testing.media import make_image, make_video


def _unknown_codec(good: Path, out: Path) -> Path:
    """`good` (an H.264 MP4) with its sample description's codec id `avc1` changed to `zvc1`."""
    data = good.read_bytes()
    at = data.find(b"avc1", data.find(b"stsd"))
    assert at > 0
    out.write_bytes(data[:at] + b"zvc1" + data[at + 4:])
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    good = make_video(d / "good.mp4", seconds=1.0, fps=10, width=64, height=48)
    return {"good": good, "bad": _unknown_codec(good, d / "bad.mp4")}


def test_unknown_codec_is_named_in_a_typed_error(videos):
    with pytest.raises(UnsupportedMediaError, match="no decoder for this video's codec 'zvc1'"):
        open_media(videos["bad"], 64, 4)


def test_unknown_codec_sinks_only_its_file(tiny_detector, videos):
    paths = [videos["good"], videos["bad"], videos["good"]]
    out = list(tiny_detector.analyze_many(paths, frames=4))
    assert [p for p, _ in out] == [str(p) for p in paths]
    assert out[0][1].media_type == out[2][1].media_type == "video"
    assert isinstance(out[1][1], UnsupportedMediaError) and "zvc1" in str(out[1][1])


def test_cli_reports_every_file_without_a_traceback(tiny_ckpt, videos):
    paths = [videos["good"], videos["bad"], videos["good"]]
    res = CliRunner().invoke(app, ["analyze", *map(str, paths), "-w", str(tiny_ckpt), "-f", "json",
                                   "--frames", "4", "--device", "cpu"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit | None)
    rows = json.loads(res.stdout)
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    assert rows[1]["error"]["type"] == "UnsupportedMediaError" and "zvc1" in rows[1]["error"]["message"]
    assert rows[0]["frames_analyzed"] == rows[2]["frames_analyzed"] == 4


def test_local_scan_writes_a_typed_error_row(tiny_detector, videos):
    paths = [str(videos["good"]), str(videos["bad"])]
    runner = LocalRunner(tiny_detector, DecodeConfig(tiny_detector.input_size, 4), workers=1)
    done = {f.path: f.outcome for f in runner.run(paths)}
    bad = done[str(videos["bad"])]
    assert bad.type == "UnsupportedMediaError" and bad.kind == "unsupported_media" and "zvc1" in bad.message
    assert getattr(done[str(videos["good"])], "prediction", None) in ("REAL", "FAKE")


def test_unexpected_errors_are_typed_and_logged_with_their_traceback(videos, tmp_path, monkeypatch, caplog):
    """The safety net: any exception while opening or iterating one input is that input's typed error."""
    image = make_image(tmp_path / "x.png", 40, 30)

    def broken(*args, **kwargs):
        raise KeyError("decoder bug")

    monkeypatch.setattr(source, "open_image", broken)
    with caplog.at_level(logging.WARNING, logger="mffmoe.media"), pytest.raises(UnexpectedDecodeError) as e:
        open_media(image, 64, 4)
    assert "failed unexpectedly (KeyError" in str(e.value) and e.value.kind == "internal_error"
    assert caplog.records and caplog.records[-1].exc_info is not None

    item = open_media(videos["good"], 64, 4)
    monkeypatch.setattr(item.sampler, "_sample", broken)
    with item, pytest.raises(MFFMoEError, match="decoding failed unexpectedly"):
        list(item.frames())


# --- huge images: resized in strips, never as one float copy -----------------------------------------
def test_strip_resize_equals_the_spec_transform():
    import numpy as np
    from PIL import Image

    from mffmoe.media import preprocess as pre

    rng = np.random.default_rng(7)
    image = Image.fromarray(rng.integers(0, 256, (1100, 1500, 3), dtype=np.uint8))
    spec = pre.spec_transform(512)(image).numpy()
    whole = pre.preprocess(image, 512)
    for source_ in (image, np.asarray(image)):
        ours = pre.normalize(pre.resize_in_strips(source_, 512, rows=97))
        assert ours.shape == spec.shape and np.abs(ours - spec).max() <= 1e-5
        assert np.array_equal(ours, whole)  # Pillow's two passes, split at strip borders: the same numbers


def test_a_large_image_takes_the_strip_path_with_the_same_score(tiny_detector, tmp_path, monkeypatch):
    from mffmoe.media import preprocess as pre

    path = make_image(tmp_path / "large.png", 3000, 2000, seed=4)
    direct = tiny_detector.analyze(path).score
    calls = []
    real = pre.resize_strips

    def spy(*args, **kwargs):
        calls.append(args[1:])
        return real(*args, **kwargs)

    monkeypatch.setattr(pre, "STRIP_PIXELS", 1_000_000)
    monkeypatch.setattr(pre, "resize_strips", spy)
    strips = tiny_detector.analyze(path)
    assert calls == [(3000, 2000, tiny_detector.input_size)]
    assert abs(strips.score - direct) <= 1e-5 and strips.dimensions == {"width": 3000, "height": 2000}


def test_max_image_pixels_can_only_lower_pillows_cap():
    from mffmoe.config import MAX_IMAGE_PIXELS, DetectorConfig
    from mffmoe.errors import ConfigError
    from mffmoe.media.image import DEFAULT_MAX_PIXELS

    assert MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS
    assert DetectorConfig(max_image_pixels=1_000_000).max_image_pixels == 1_000_000
    with pytest.raises(ConfigError, match="max_image_pixels"):
        DetectorConfig(max_image_pixels=MAX_IMAGE_PIXELS + 1)
