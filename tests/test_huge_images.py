"""Huge images within the memory budget: read in strips by libvips with Pillow's exact pixels, or decoded
whole only up to a lower limit, and refused before a model loads when they cannot fit."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mffmoe.cli import app
from mffmoe.errors import CorruptMediaError, DecompressionBombError
from mffmoe.media import preprocess as pre
from mffmoe.media import strips
from mffmoe.media.image import load_image, open_image
from mffmoe.media.source import open_media
from mffmoe.media.strips import StripImage, open_strips


def _base(seed: int = 1) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize((173, 131), Image.BILINEAR)
    alpha = Image.fromarray(rng.integers(0, 256, (131, 173), dtype=np.uint8))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    return rgb, rgba


def _cases(d: Path) -> dict[str, Path]:
    """One small file per (format, mode, encoding) the strip path claims to read exactly."""
    import pyvips

    rgb, rgba = _base()
    out: dict[str, Path] = {}

    def save(name: str, image: Image.Image, **kw) -> None:
        image.save(d / name, **kw)
        out[name] = d / name

    save("rgb.png", rgb)
    save("rgba.png", rgba)
    save("l.png", rgb.convert("L"))
    save("la.png", rgba.convert("LA"))
    save("p.png", rgb.quantize(200))
    save("p4.png", rgb.quantize(16), bits=4)
    save("p_transparent.png", rgb.quantize(100), transparency=5)
    rng = np.random.default_rng(2)
    save("grey16.png", Image.fromarray(rng.integers(0, 65536, (131, 173)).astype(np.uint16)))
    deep = (np.asarray(rgb).astype(np.uint16) * 257 + rng.integers(0, 257, (131, 173, 3))).astype(np.uint16)
    pyvips.Image.new_from_array(deep, interpretation="rgb16").pngsave(str(d / "rgb16.png"))
    out["rgb16.png"] = d / "rgb16.png"
    save("q420.jpg", rgb, quality=90)
    save("q444.jpg", rgb, quality=90, subsampling=0)
    save("q422.jpg", rgb, quality=75, subsampling=1)
    save("grey.jpg", rgb.convert("L"), quality=85)
    save("rgb.tif", rgb)
    save("lzw.tif", rgb, compression="tiff_lzw")
    save("deflate.tif", rgb, compression="tiff_adobe_deflate")
    save("l.tif", rgb.convert("L"))
    save("rgba.tif", rgba)
    save("la.tif", rgba.convert("LA"))
    pyvips.Image.new_from_array(np.asarray(rgb)).tiffsave(str(d / "tiled.tif"), tile=True, tile_width=64,
                                                          tile_height=64)
    out["tiled.tif"] = d / "tiled.tif"
    return out


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Path]:
    return _cases(tmp_path_factory.mktemp("strip-cases"))


CASE_NAMES = ["rgb.png", "rgba.png", "l.png", "la.png", "p.png", "p4.png", "p_transparent.png", "grey16.png",
              "rgb16.png", "q420.jpg", "q444.jpg", "q422.jpg", "grey.jpg", "rgb.tif", "lzw.tif", "deflate.tif",
              "l.tif", "rgba.tif", "la.tif", "tiled.tif"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_strips_have_exactly_pillows_pixels(cases, name):
    path = cases[name]
    with Image.open(path) as header:
        streamed = open_strips(path, header)
    assert streamed is not None, f"{name} should be read in strips"
    ours = np.concatenate(list(streamed.strips(7)))  # strips of 7 rows: 131 is not a multiple
    assert np.array_equal(ours, np.asarray(load_image(path, exif_transpose=False)))


def test_formats_whose_decoders_hold_the_whole_image_are_not_streamed(tmp_path):
    rgb, _ = _base()
    import pyvips  # Pillow writes no interlaced PNG

    pyvips.Image.new_from_array(np.asarray(rgb)).pngsave(str(tmp_path / "inter.png"), interlace=True)
    rgb.save(tmp_path / "prog.jpg", progressive=True)
    rgb.save(tmp_path / "x.webp")
    rgb.save(tmp_path / "x.bmp")
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg")
    for name in ("inter.png", "prog.jpg", "x.webp", "x.bmp", "cmyk.jpg"):
        with Image.open(tmp_path / name) as header:
            assert open_strips(tmp_path / name, header) is None, name


@pytest.mark.parametrize("value", range(1, 9))
def test_exif_orientation_applied_after_the_strip_resize(tmp_path, monkeypatch, value):
    """Resizing then rotating equals Pillow's exif_transpose then resizing, to 1e-5, for all 8 values."""
    rgb, _ = _base(seed=value)
    exif = Image.Exif()
    exif[0x0112] = value
    path = tmp_path / f"o{value}.jpg"
    rgb.resize((300, 200)).save(path, quality=92, exif=exif.tobytes())
    whole = open_image(path)
    monkeypatch.setattr(pre, "STRIP_PIXELS", 10_000)
    streamed = open_image(path)
    assert isinstance(streamed, StripImage) and isinstance(whole, Image.Image)
    assert streamed.orientation == value and streamed.size == whole.size
    expected = pre.spec_transform(64)(whole).numpy()
    assert np.abs(pre.preprocess(streamed, 64) - expected).max() <= 1e-5


def test_a_truncated_image_read_in_strips_is_a_corrupt_media_error(tmp_path, monkeypatch):
    from mffmoe.testing.media import make_image

    for name in ("cut.png", "cut.jpg"):
        path = make_image(tmp_path / name, 400, 300, seed=3)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
        monkeypatch.setattr(pre, "STRIP_PIXELS", 10_000)
        with pytest.raises(CorruptMediaError, match="truncated or undecodable"):
            open_media(path, 64, 4)


def test_large_images_decoded_whole_have_a_lower_limit(tmp_path, monkeypatch):
    from mffmoe.testing.media import make_image

    bmp = make_image(tmp_path / "x.bmp", 300, 200)
    png = make_image(tmp_path / "x.png", 300, 200)
    monkeypatch.setattr(pre, "STRIP_PIXELS", 10_000)
    monkeypatch.setattr(strips, "WHOLE_PIXELS_DEFAULT", 50_000)
    with pytest.raises(DecompressionBombError, match="must be decoded whole.*read in strips as PNG"):
        open_media(bmp, 64, 4)
    assert isinstance(open_image(png), StripImage)  # the same size as a PNG is read in strips
    monkeypatch.setattr(strips, "WHOLE_PIXELS_DEFAULT", 60_000)
    assert open_media(bmp, 64, 4).dimensions == {"width": 300, "height": 200}


def test_pixel_limits_are_checked_before_the_model_loads(tmp_path):
    """--max-pixels is a header check: the error comes before any weights are looked for."""
    from mffmoe.testing.media import make_image

    path = make_image(tmp_path / "x.png", 64, 64)
    result = CliRunner().invoke(app, ["analyze", str(path), "--max-pixels", "1000", "-w",
                                      str(tmp_path / "no-such-weights"), "-f", "json"])
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert rows[0]["error"]["kind"] == "decompression_bomb" and "4,096 pixels exceeds" in rows[0]["error"]["message"]
    assert "no-such-weights" not in result.output  # the weights were never looked for


PEAK = """
import resource, sys
from mffmoe.media.source import open_media
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
item = open_media(sys.argv[1], 512, 4)
print(item.dimensions["width"], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


@pytest.mark.slow
def test_a_12000_pixel_square_png_is_decoded_in_strips_in_a_small_memory(tmp_path):
    """Defect 4: a small PNG of 12000 x 12000 pixels held 3.2 GB in `analyze`. Decoded whole, its pixels
    alone are 432-576 MB (699 MB grown before strips); read in strips, decoding and preprocessing add
    about 130-180 MB (libvips' strips, and the 74 MB H x 512 buffer between the two resize passes)."""
    import pyvips

    path = tmp_path / "huge.png"
    (pyvips.Image.black(12000, 12000, bands=3) + [120, 30, 200]).cast("uchar").pngsave(str(path))
    assert path.stat().st_size < 2_000_000
    out = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, check=True)
    width, grown_mb = map(int, out.stdout.split())
    assert width == 12000 and grown_mb < 250, out.stdout
