"""`mffmoe analyze --explain`: maps in the JSON, overlays on disk, the table's lines, and every bad option
refused before a model loads. The maps' correctness is tested in test_explain*.py."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from mffmoe.cli import app
from mffmoe.results import WHAT_A_MAP_IS

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_explain_writes_maps_and_overlays_for_images_and_videos(tiny_ckpt, media, tmp_path):
    out = tmp_path / "maps"
    res = run("analyze", media["jpg"], media["mp4"], media["text"], "-w", tiny_ckpt, "-f", "json", "--crop", "frame",
              "--explain-dir", out, "--explain-frames", "2", "--explain-method", "occlusion", "--explain-experts")
    assert res.exit_code == 1  # the text file's row is an error; the others are explained
    image, video, text = json.loads(res.stdout)
    assert "error" in text and "explanation" not in text
    e = image["explanation"]
    assert e["method"] == "occlusion" and e["note"] == WHAT_A_MAP_IS and (e["width"], e["height"]) == (320, 200)
    (item,) = e["items"]
    assert item["kind"] == "frame" and len(item["map"]) == 32 and all(len(r) == 32 for r in item["map"])
    assert all(0.0 <= v <= 1.0 for r in item["map"] for v in r) and len(item["experts"]) == 2
    assert Image.open(item["overlay"]).size == (320, 200) and item["overlay"].endswith("photo.frame.png")
    frames = video["explanation"]["items"]
    assert len(frames) == 2 and {f["kind"] for f in frames} == {"frame"}
    best = sorted(video["frame_predictions"], key=lambda f: -f["score"])[:2]
    assert {f["frame_index"] for f in frames} == {f["frame_index"] for f in best}
    assert all(Image.open(f["overlay"]).size == (160, 120) for f in frames)


def test_without_explain_nothing_is_added(tiny_ckpt, media):
    (row,) = json.loads(run("analyze", media["jpg"], "-w", tiny_ckpt, "-f", "json").stdout)
    assert row["explanation"] is None


def test_table_lists_each_map_and_says_what_a_map_is(tiny_ckpt, media):
    res = run("analyze", media["jpg"], "-w", tiny_ckpt, "--crop", "frame", "--explain", "--explain-method", "gradcam")
    assert res.exit_code == 0
    assert "gradcam map" in res.stdout and "peak at x=" in res.stdout
    assert " ".join(WHAT_A_MAP_IS.split()) in " ".join(res.stdout.split())


def test_bad_explain_options_are_refused_before_loading(tiny_ckpt, media, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    res = run("analyze", media["jpg"], "-w", tmp_path / "no-weights", "--explain-dir", a_file)
    assert res.exit_code != 0 and "is a file, not a folder" in res.output  # refused before the weights are looked at
    res = run("analyze", media["jpg"], "-w", tiny_ckpt, "--explain", "--explain-method", "lime")
    assert res.exit_code != 0 and "choose auto, gradcam or occlusion" in res.output
    res = run("analyze", media["jpg"], "-w", tiny_ckpt, "--explain", "--explain-frames", "0")
    assert res.exit_code != 0


def test_help_says_what_a_map_is():
    res = run("analyze", "--help")
    assert "not proof that a region was manipulated" in " ".join(res.stdout.split())


def test_the_python_api_takes_the_same_options_and_gives_the_cli_maps(tiny_ckpt, tiny_detector, media):
    """`mffmoe.explained(detector, path, result, ExplainOptions(...))`: the library's --explain."""
    from mffmoe import ExplainOptions, explained

    result = tiny_detector.analyze(media["jpg"])
    done = explained(tiny_detector, media["jpg"], result, ExplainOptions(method="occlusion"))
    assert done.score == result.score and done.explanation is not None and result.explanation is None
    (row,) = json.loads(run("analyze", media["jpg"], "-w", tiny_ckpt, "-f", "json", "--crop", "frame",
                            "--explain", "--explain-method", "occlusion").stdout)
    cli_map, api_map = np.array(row["explanation"]["items"][0]["map"]), np.array(done.explanation.items[0].map)
    assert np.abs(cli_map - api_map).max() <= 1e-3  # batch sizes differ (torch's kernels by 1e-7)
    # a failed explanation leaves the score and says why in the note
    gone = explained(tiny_detector, "/nonexistent/photo.jpg", result, ExplainOptions(method="occlusion"))
    assert gone.explanation is None and gone.score == result.score and "no explanation" in (gone.note or "")
