"""The `mffmoe` command: analyze/info/convert/sample, output formats, exit codes, weights resolution."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mffmoe.cli import app
from mffmoe.testing.checkpoints import TINY_ROSTER

runner = CliRunner()


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def test_analyze_json_in_input_order_with_errors(tiny_ckpt, media):
    res = run("analyze", media["jpg"], media["text"], media["mp4"], "--weights", tiny_ckpt,
              "--format", "json", "--frames", "4", "--device", "cpu")
    assert res.exit_code == 1  # one input failed; the others are still reported
    rows = json.loads(res.stdout)
    assert [r["path"] for r in rows] == [str(media["jpg"]), str(media["text"]), str(media["mp4"])]
    assert rows[0]["media_type"] == "image" and 0 <= rows[0]["score"] <= 1
    assert rows[1]["error"]["type"] == "UnsupportedMediaError" and "score" not in rows[1]
    assert rows[1]["error"]["message"]
    assert rows[2]["frames_analyzed"] == 4 and len(rows[2]["frame_predictions"]) == 4
    assert "1 of 3 input(s) failed" in res.stderr


def test_analyze_directory_jsonl_and_output_file(tiny_ckpt, media, tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / "a.jpg").write_bytes(media["jpg"].read_bytes())
    (d / "sub" / "b.png").write_bytes(media["png"].read_bytes())
    out = tmp_path / "out.jsonl"
    res = run("analyze", d, "-w", tiny_ckpt, "--format", "jsonl", "--output", out)
    assert res.exit_code == 0, res.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [os.path.basename(x["path"]) for x in lines] == ["a.jpg", "b.png"]


def test_weights_from_environment_and_table_output(tiny_ckpt, media):
    res = run("analyze", media["jpg"], env={"MFFMOE_WEIGHTS": str(tiny_ckpt)})
    assert res.exit_code == 0, res.stderr
    assert "image" in res.stdout and ("REAL" in res.stdout or "FAKE" in res.stdout)


def test_missing_weights_explain_where_to_put_them(media, tmp_path):
    res = run("analyze", media["jpg"], "--weights", tmp_path / "none")
    assert res.exit_code == 2
    assert "MFF-MoE-v1.pth" in res.stderr and "--untrained" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_threshold_option(tiny_ckpt, media):
    rows = json.loads(run("analyze", media["jpg"], "-w", tiny_ckpt, "-f", "json", "--threshold", "0").stdout)
    assert rows[0]["prediction"] == "FAKE" and rows[0]["threshold"] == 0


def test_info_reports_roster_params_ema_hashes(tiny_ckpt):
    res = run("info", "--weights", tiny_ckpt, "--format", "json")
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["roster"] == list(TINY_ROSTER) and data["ema"] is True and data["input_size"] == 64
    assert data["parameters"] == sum(data["parameters_per_expert"]) > 0
    assert len(data["files"]["weights"]["sha256"]) == 64


def test_convert_then_analyze_gives_same_scores(tiny_ckpt, media, tmp_path):
    out = tmp_path / "m.safetensors"
    res = run("convert", tiny_ckpt, out)
    assert res.exit_code == 0, res.stderr
    a = json.loads(run("analyze", media["jpg"], "-w", tiny_ckpt, "-f", "json").stdout)[0]
    b = json.loads(run("analyze", media["jpg"], "-w", out, "-f", "json").stdout)[0]
    assert a["score"] == pytest.approx(b["score"], abs=1e-7)
    info = json.loads(run("info", "-w", out, "-f", "json").stdout)
    assert info["layout"] == "safetensors" and info["metadata"]["format"] == "mffmoe-folded-ema-v1"


def test_sample_command_makes_media(tmp_path):
    res = run("sample", tmp_path / "s")
    assert res.exit_code == 0
    assert (tmp_path / "s" / "sample.jpg").stat().st_size > 0 and (tmp_path / "s" / "sample.mp4").stat().st_size > 0


def test_real_process_exit_codes_and_no_traceback(tiny_ckpt, media, tmp_path):
    """One true subprocess run of the installed entry point (others use the in-process runner)."""
    cmd = [sys.executable, "-m", "mffmoe.cli", "analyze", str(media["empty"]), str(media["jpg"]),
           "--weights", str(tiny_ckpt), "--format", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    rows = json.loads(proc.stdout)
    assert rows[0]["error"]["type"] == "EmptyMediaError" and rows[1]["media_type"] == "image"
    assert "Traceback" not in proc.stderr


def test_unreadable_input_is_one_error_row_and_the_others_are_reported(tiny_ckpt, media, tmp_path, monkeypatch):
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(media["jpg"].read_bytes())
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway: make opening it fail as it does for anyone else
        import builtins
        import io

        real_open = builtins.open

        def refuse(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(locked):
                raise PermissionError(13, "Permission denied", str(locked))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refuse)
        monkeypatch.setattr(io, "open", refuse)
    res = run("analyze", media["jpg"], locked, media["png"], "-w", tiny_ckpt, "-f", "json")
    assert res.exit_code == 1
    rows = json.loads(res.stdout)
    assert [r["path"] for r in rows] == [str(media["jpg"]), str(locked), str(media["png"])]
    assert rows[1]["error"]["type"] == "UnreadableMediaError" and rows[1]["error"]["kind"] == "unreadable"
    assert "\n" not in rows[1]["error"]["message"] and "Permission denied" in rows[1]["error"]["message"]
    assert rows[0]["media_type"] == rows[2]["media_type"] == "image"
    assert "1 of 3 input(s) failed" in res.stderr and "Traceback" not in res.stderr + res.stdout


COMMANDS = ["analyze", "info", "convert", "verify", "sample", "export", "serve", "train", "evaluate", "calibrate",
            "scan", "keygen", "report"]
#: Declared once in mffmoe.cli.options; each must mean the same in every command that takes it.
SHARED = ["--weights", "--device", "--engine", "--frames", "--batch-size", "--threshold", "--pooling",
          "--early-exit", "--untrained", "--allow-missing-ema"]
#: `train` takes these as run settings: None means "as the saved run has it" on --resume.
TRAIN_OWN = {"--batch-size", "--allow-missing-ema"}


def _commands():
    import typer

    return typer.main.get_command(app).commands


def test_app_lists_every_command():
    assert list(_commands()) == COMMANDS


def test_shared_options_have_one_type_and_default():
    def describe(p):
        """Type, parser, range, default, names and help of one option (typer's own parameter model)."""
        td = p.type_descriptor
        return tuple({"type": td.annotation, "parser": td.parameter_info.parser, "min": p.min, "max": p.max,
                      "default": p.default, "names": tuple(p.opts), "negations": tuple(p.secondary_opts),
                      "flag": p.is_flag, "help": p.help, "metavar": p.metavar}.items())

    seen: dict[str, dict[str, tuple]] = {flag: {} for flag in SHARED}
    for name, command in _commands().items():
        for p in command.params:
            flag = next((o for o in p.opts if o in seen), None)
            if flag is not None and p.param_type_name == "option" and not (name == "train" and flag in TRAIN_OWN):
                seen[flag][name] = describe(p)
    for flag, by_command in seen.items():
        assert len(set(by_command.values())) == 1, (flag, by_command)
    assert set(seen["--engine"]) == set(seen["--device"]) - {"train"} == {
        "analyze", "serve", "evaluate", "calibrate", "scan"}
    assert {"serve", "analyze", "scan", "evaluate"} <= set(seen["--pooling"])
    assert {"serve", "analyze"} <= set(seen["--early-exit"])
    assert dict(next(iter(seen["--engine"].values())))["default"] == "auto"
    assert len(seen["--weights"]) == 8 and "train" in seen["--device"]
