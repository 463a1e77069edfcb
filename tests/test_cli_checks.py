"""What a new user trips over: one-line errors whatever the width, checks that need no model run before it
loads, unwritable outputs refused before any work, whole option names in --help, --max-pixels."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from mffmoe.cli import app
from mffmoe.errors import WeightsNotFoundError

runner = CliRunner()


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def cli_process(*args, columns="40"):
    """The real entry point with stderr piped (not a terminal) and a narrow $COLUMNS."""
    env = {**os.environ, "COLUMNS": columns}
    return subprocess.run([sys.executable, "-m", "mffmoe.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if any model is loaded."""
    from mffmoe.inference.detector import Detector

    def refuse(config):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(Detector, "from_config", refuse)


# --- one line -------------------------------------------------------------------------------------
def test_error_is_one_line_when_stderr_is_piped(media, tmp_path):
    weights = tmp_path / ("very-long-folder-name-" * 8) / "MFF-MoE-V1"
    proc = cli_process("analyze", media["jpg"], "--weights", weights)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: no MFF-MoE weights found at ") and str(weights) in lines[0]
    assert lines[0].endswith("with random weights.")


def test_failed_count_and_rows_without_a_model_in_a_real_process(tmp_path):
    missing = tmp_path / ("a-long-name-of-a-file-that-is-not-there-" * 4 + ".jpg")
    proc = cli_process("analyze", missing, "--untrained", "-f", "json", columns="20")
    assert proc.returncode == 1
    rows = json.loads(proc.stdout)
    assert rows == [{"path": str(missing), "error": {"type": "MediaNotFoundError", "kind": "not_found",
                                                     "message": f"{missing}: no such file"}}]
    assert proc.stderr.splitlines() == ["1 of 1 input(s) failed"]


def test_error_with_brackets_is_printed_as_written(tmp_path):
    res = run("analyze", tmp_path / "[x]" / "a.jpg", "--untrained", "--engine", "[bold]nope")
    assert res.exit_code == 2
    assert "unknown engine '[bold]nope'" in res.stderr


# --- before the model loads -----------------------------------------------------------------------
def test_no_readable_input_reports_rows_and_loads_no_model(media, tmp_path, no_model):
    missing = tmp_path / "missing.jpg"
    res = run("analyze", missing, media["empty"], media["text"], "--untrained", "-f", "json")
    assert res.exit_code == 1
    rows = json.loads(res.stdout)
    assert [r["path"] for r in rows] == [str(missing), str(media["empty"]), str(media["text"])]
    assert [r["error"]["type"] for r in rows] == ["MediaNotFoundError", "EmptyMediaError", "UnsupportedMediaError"]
    assert "3 of 3 input(s) failed" in res.stderr and "Traceback" not in res.stderr


def test_bad_inputs_stay_rows_beside_good_ones(tiny_ckpt, media, tmp_path):
    missing = tmp_path / "missing.jpg"
    res = run("analyze", missing, media["jpg"], missing, media["png"], "-w", tiny_ckpt, "-f", "jsonl")
    assert res.exit_code == 1
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(missing), str(media["jpg"]), str(missing), str(media["png"])]
    assert [r.get("error", {}).get("type") for r in rows] == ["MediaNotFoundError", None, "MediaNotFoundError", None]
    assert rows[1]["media_type"] == rows[3]["media_type"] == "image"
    assert "2 of 4 input(s) failed" in res.stderr


def test_unknown_engine_fails_before_loading(media, no_model):
    res = run("analyze", media["jpg"], "--untrained", "--engine", "nope")
    assert res.exit_code == 2
    assert "unknown engine 'nope'" in res.stderr and len(res.stderr.splitlines()) == 1


def test_cuda_without_gpu_fails_before_loading(media, no_model, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = run("analyze", media["jpg"], "--untrained", "--device", "cuda")
    assert res.exit_code == 2 and "CUDA is not available" in res.stderr


@pytest.mark.parametrize("command", ["serve", "evaluate"])
def test_serve_and_evaluate_check_options_before_loading(command, media, tmp_path, no_model, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = ["--data", str(tmp_path)] if command == "evaluate" else ["--untrained"]
    res = run(command, *data, "--engine", "nope")
    assert res.exit_code == 2 and "unknown engine 'nope'" in res.stderr
    res = run(command, *data, "--device", "cuda")
    assert res.exit_code == 2 and "CUDA is not available" in res.stderr


def test_evaluate_refuses_unusable_output_paths_before_loading(tmp_path, media, no_model):
    res = run("evaluate", "--data", tmp_path, "--scores", tmp_path)
    assert res.exit_code == 2 and "--scores" in res.stderr and "is a directory" in res.stderr
    res = run("evaluate", "--data", tmp_path, "--plots", media["jpg"])
    assert res.exit_code == 2 and "--plots" in res.stderr and "is a file" in res.stderr


def test_serve_refuses_a_directory_as_db_and_a_file_as_upload_dir(tmp_path, media, no_model):
    res = run("serve", "--untrained", "--db", tmp_path)
    assert res.exit_code == 2 and "is a directory" in res.stderr
    res = run("serve", "--untrained", "--upload-dir", media["jpg"])
    assert res.exit_code == 2 and "is a file" in res.stderr


def test_scan_checks_options_before_any_work(media, tmp_path, monkeypatch):
    import torch

    import mffmoe.scan.job as job

    def refuse(*a, **k):
        raise AssertionError("the scan started")

    monkeypatch.setattr(job, "run_scan", refuse)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base = ["scan", media["jpg"].parent, "--out", tmp_path / "r.jsonl", "--untrained"]
    assert "unknown engine 'nope'" in run(*base, "--engine", "nope").stderr
    assert "CUDA is not available" in run(*base, "--device", "cuda").stderr
    res = run(*base, "--summary-json", tmp_path / "no" / "s.json")
    assert res.exit_code == 2 and "does not exist" in res.stderr
    (tmp_path / "d.jsonl").mkdir()
    res = run("scan", media["jpg"].parent, "--out", tmp_path / "d.jsonl", "--untrained")
    assert res.exit_code == 2 and "is a directory" in res.stderr


# --- the output file ------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["dir", "missing"])
def test_unwritable_output_fails_before_any_work(where, media, tmp_path, no_model):
    out = tmp_path if where == "dir" else tmp_path / "missing" / "x.json"
    res = run("analyze", media["jpg"], "--untrained", "-o", out)
    assert res.exit_code == 2 and len(res.stderr.splitlines()) == 1
    assert ("is a directory" if where == "dir" else "does not exist") in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_output_in_a_read_only_folder_fails_before_any_work(media, tmp_path, no_model):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        res = run("analyze", media["jpg"], "--untrained", "-o", folder / "x.json")
    finally:
        folder.chmod(0o700)
    assert res.exit_code == 2 and "permission denied" in res.stderr


def test_output_that_cannot_be_created_fails_before_any_work(media, tmp_path, no_model, monkeypatch):
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    res = run("analyze", media["jpg"], "--untrained", "-o", tmp_path / "x.json")
    assert res.exit_code == 2 and "cannot be written (Permission denied)" in res.stderr


def test_output_is_replaced_whole_and_no_temporary_is_left(tiny_ckpt, media, tmp_path):
    out = tmp_path / "report.json"
    out.write_text("the previous report")
    res = run("analyze", media["jpg"], "-w", tiny_ckpt, "-f", "json", "-o", out)
    assert res.exit_code == 0, res.stderr
    assert json.loads(out.read_text())[0]["media_type"] == "image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    res = run("analyze", media["jpg"], "-w", tmp_path / "none", "-o", out)  # fails at the load
    assert res.exit_code == 2
    assert json.loads(out.read_text())[0]["media_type"] == "image"  # the previous report is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


# --- sample, info ---------------------------------------------------------------------------------
def test_sample_into_a_file_is_a_clear_error(tmp_path):
    f = tmp_path / "passwd"
    f.write_text("root:x:0:0\n")
    res = run("sample", f)
    assert res.exit_code == 2 and "is a file" in res.stderr and "Traceback" not in res.stderr
    assert f.read_text() == "root:x:0:0\n"


def test_info_jsonl_is_one_json_line(tiny_ckpt):
    res = run("info", "-w", tiny_ckpt, "--format", "jsonl", "--no-hashes")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["experts"] > 0


# --- help -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [80, 60])
def test_help_shows_every_option_name_whole(width):
    for name, command in typer.main.get_command(app).commands.items():
        res = runner.invoke(app, [name, "--help"], env={"COLUMNS": str(width)}, terminal_width=width)
        assert res.exit_code == 0
        names = [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")]
        cut = [o for o in names if not re.search(re.escape(o) + r"(?![\w-])", res.stdout)]
        assert not cut and "…" not in res.stdout, (name, cut)


# --- --max-pixels ---------------------------------------------------------------------------------
def test_max_pixels_makes_a_larger_image_a_typed_row(tiny_ckpt, media):
    res = run("analyze", media["jpg"], media["png"], "-w", tiny_ckpt, "-f", "json", "--max-pixels", 50_000)
    assert res.exit_code == 1
    jpg, png = json.loads(res.stdout)  # 320x200 = 64000 pixels, 150x260 = 39000
    assert jpg["error"]["type"] == "DecompressionBombError" and jpg["error"]["kind"] == "decompression_bomb"
    assert png["media_type"] == "image"


def test_max_pixels_is_one_option_for_analyze_serve_and_scan(tmp_path, monkeypatch):
    from mffmoe.inference.detector import Detector

    commands = typer.main.get_command(app).commands
    found = {n: next(p for p in c.params if "--max-pixels" in p.opts) for n, c in commands.items()
             if any("--max-pixels" in p.opts for p in c.params)}
    assert set(found) == {"analyze", "serve", "scan"}
    assert len({(str(p.type_descriptor.annotation), p.min, p.default, p.help, p.metavar) for p in found.values()}) == 1

    seen = []

    def capture(config):
        seen.append(config.max_image_pixels)
        raise WeightsNotFoundError("stop here")

    monkeypatch.setattr(Detector, "from_config", capture)
    assert run("serve", "--untrained", "--max-pixels", 1234).exit_code == 2

    import mffmoe.scan.job as job

    monkeypatch.setattr(job, "run_scan", lambda options, **k: capture(options.detector))
    assert run("scan", tmp_path, "--out", tmp_path / "r.jsonl", "--untrained", "--max-pixels", 99).exit_code == 2
    assert seen == [1234, 99]


def test_importing_the_cli_stays_light():
    code = "import sys, mffmoe.cli; print(sorted(m for m in ('torch', 'timm', 'fastapi') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_readme_synopsis_lists_every_command_and_option():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    synopsis = readme.split("## CLI", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    for name, command in typer.main.get_command(app).commands.items():
        line = re.search(rf"^mffmoe {name} .*?(?=^mffmoe |\Z)", synopsis, re.M | re.S)
        assert line, name
        names = [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
        missing = [o for o in names if o != "--help" and not re.search(re.escape(o) + r"(?![\w-])", line[0])]
        assert not missing, (name, missing)


def test_setup_script_says_what_it_does_and_stays_quiet_off_a_terminal(tmp_path):
    """scripts/setup.sh against a stand-in venv (its python records the calls): step lines, pip quiet in CI."""
    import shutil
    from pathlib import Path

    (tmp_path / "scripts").mkdir()
    shutil.copy(Path(__file__).parents[1] / "scripts" / "setup.sh", tmp_path / "scripts")
    (tmp_path / "pyproject.toml").touch()
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path / 'calls'}\n")
    fake.chmod(0o755)
    env = {**os.environ, "MFFMOE_SKIP_BROWSER": "1", "CI": "1"}
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=60, check=True)
    steps = [line for line in proc.stderr.splitlines() if line.startswith("==> ")]
    assert any("installing mffmoe with all extras" in s for s in steps) and any("installed;" in s for s in steps)
    install = (tmp_path / "calls").read_text().splitlines()[-1]
    assert "-e .[all]" in install and "--quiet" in install and "--progress-bar off" in install
    again = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True, env=env,
                           timeout=60, check=True)
    assert "installing" not in again.stderr  # a second run only checks


def test_a_missing_input_is_answered_without_importing_torch():
    """Start-up: a missing file is reported before torch (seconds and ~0.5 GB on its own) is imported."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from mffmoe.cli import app; "
            "r = CliRunner().invoke(app, ['analyze', '/nonexistent/x.jpg', '--untrained']); "
            "print(r.exit_code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "False"], out
