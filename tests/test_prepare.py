"""`--engine auto` prepares OpenVINO graphs on first use (engine/prepare.py): built once in a child
process, cached, safe when two processes start at once; afterwards loading needs no torch at all."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mffmoe.errors import CheckpointFormatError
from mffmoe.testing.checkpoints import TINY_ROSTER, make_random_checkpoint
from mffmoe.testing.media import make_image

SIZE = 64


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """A tiny checkpoint (measured BatchNorm statistics, as trained weights have) never prepared before."""
    return make_random_checkpoint(tmp_path_factory.mktemp("prepare") / "w", TINY_ROSTER, SIZE, measured_bn=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return make_image(tmp_path_factory.mktemp("img") / "a.jpg", 200, 150, seed=3)


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".mffmoe-cache"))
    return dst


def test_first_load_prepares_then_later_loads_need_no_torch(fresh, image, monkeypatch, capfd):
    from mffmoe.inference.detector import Detector

    monkeypatch.setenv("MFFMOE_BUILD", "1")
    first = Detector.from_dir(fresh, crop="frame")
    err = capfd.readouterr().err
    # tiny experts: either engine may time faster (the full roster's OpenVINO is 2-3x torch's speed)
    assert first.engine.name in ("openvino", "torch") and "calibrated" in (first.engine.auto_reason or "")
    assert "preparing fast CPU graphs" in err and "expected about" in err and "graphs ready in" in err
    assert "OpenVINO graph 2/2 converted" in err  # progress per expert, relayed from the child
    path = next(fresh.glob(".mffmoe-cache/*/calibration.json"))
    record = json.loads(path.read_text())
    assert record["engines"]["openvino"]["ok"] and record["engines"]["openvino"]["max_abs_diff"] <= 1e-4
    # torch was measured as a one-shot job runs it (lean: the weights stay mapped, the build stays small)
    assert record["engines"]["torch"]["options"] == {"lean": True} and record["engines"]["torch"]["ok"]
    reference = Detector.from_dir(fresh, crop="frame", engine="torch").analyze(image)
    assert abs(first.analyze(image).score - reference.score) <= 1e-4

    # a later process, with the record saying OpenVINO is the faster (as it is for the full roster): the
    # cached graphs, no torch imported, the same score, nothing rebuilt
    record["engines"]["torch"]["latency_s"] = 10 * max(record["engines"]["openvino"]["latency_s"], 1e-3)
    path.write_text(json.dumps(record))
    code = (f"import sys; from mffmoe import Detector; d = Detector.from_dir({str(fresh)!r}, crop='frame'); "
            f"r = d.analyze({str(image)!r}); print(d.engine.name, r.score, 'torch' in sys.modules)")
    out = _python(code, MFFMOE_BUILD="1")
    assert out.returncode == 0, out.stderr
    name, score, torch_loaded = out.stdout.split()
    assert name == "openvino" and torch_loaded == "False"
    assert abs(float(score) - reference.score) <= 1e-4
    assert "preparing" not in out.stderr


def test_two_processes_starting_at_once_build_once(fresh, image, tmp_path):
    weights = _copy(fresh, tmp_path / "w")
    code = (f"from mffmoe import Detector; d = Detector.from_dir({str(weights)!r}, crop='frame'); "
            f"print(d.engine.name, d.analyze({str(image)!r}).score)")
    env = {**os.environ, "MFFMOE_BUILD": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert {o.split()[0] for o, _ in outs} <= {"openvino", "torch"}  # whichever timed faster (tiny experts)
    assert np.isclose(float(outs[0][0].split()[1]), float(outs[1][0].split()[1]), atol=1e-6)
    errs = [e for _, e in outs]
    assert sum("preparing fast CPU graphs" in e for e in errs) == 1, errs  # one built, under the lock
    assert any("another process is preparing" in e for e in errs) or sum("graphs ready" in e for e in errs) == 1
    assert len(list(weights.glob(".mffmoe-cache/*/openvino/expert-*.xml"))) == len(TINY_ROSTER)


def test_broken_weights_are_a_typed_error_not_a_fallback(fresh, tmp_path, monkeypatch):
    from mffmoe.inference.detector import Detector

    weights = _copy(fresh, tmp_path / "w")
    (weights / "mffmoe.json").write_text(json.dumps({"roster": ["no_such_model", "test_convnext"],
                                                     "input_size": SIZE}))
    monkeypatch.setenv("MFFMOE_BUILD", "1")
    with pytest.raises(CheckpointFormatError, match="no_such_model"):
        Detector.from_dir(weights, crop="frame")


def test_opted_out_runs_torch_and_says_why(fresh, tmp_path, monkeypatch):
    from mffmoe.inference.detector import Detector

    weights = _copy(fresh, tmp_path / "w")
    monkeypatch.setenv("MFFMOE_BUILD", "0")
    d = Detector.from_dir(weights, crop="frame")
    assert d.engine.name == "torch" and "no calibration record" in (d.engine.auto_reason or "")
    assert not list(weights.glob(".mffmoe-cache/*/openvino"))
