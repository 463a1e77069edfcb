"""`--precision` through the detector, the registry and the CLI (the precisions themselves: test_precision.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mffmoe.engine.precision import cpu_supports
from mffmoe.errors import ConfigError
from mffmoe.testing.checkpoints import TINY_ROSTER, make_random_checkpoint
from mffmoe.testing.media import make_image


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_random_checkpoint(tmp_path_factory.mktemp("wiring") / "w", TINY_ROSTER, 64, measured_bn=True)


@pytest.mark.skipif(cpu_supports("bf16") is not None, reason="this CPU has no native bf16")
def test_bf16_runs_on_openvino_and_every_result_says_what_it_cost(weights, tmp_path):
    from mffmoe.inference.detector import Detector

    image = make_image(tmp_path / "a.jpg", 200, 150, seed=2)
    exact = Detector.from_dir(weights, crop="frame", engine="openvino")
    bf16 = Detector.from_dir(weights, crop="frame", engine="openvino", precision="bf16")
    assert bf16.engine.precision == "bf16" and bf16.engine.describe()["precision"] == "bf16"
    a = bf16.engine.agreement
    assert a is not None and a["images"] == 16 and 0 <= a["max_abs_diff"] < 0.5
    r, e = bf16.analyze(image), exact.analyze(image)
    assert r.note is not None and "bf16 (not exact)" in r.note and "max |score difference|" in r.note
    assert e.note is None or "not exact" not in e.note
    assert abs(r.score - e.score) < 0.1 and r.score != e.score  # a different computation, near the exact one
    # the measurement is recorded once per weights and precision
    assert list(weights.glob(".mffmoe-cache/*/precision.json"))


def test_a_reduced_precision_is_refused_by_fp32_engines(weights):
    from mffmoe.inference.detector import Detector

    for engine in ("torch", "onnxruntime"):
        with pytest.raises(ConfigError, match="not available with --engine"):
            Detector.from_dir(weights, crop="frame", engine=engine, precision="int8")


def test_cli_refuses_before_loading(weights, tmp_path):
    image = make_image(tmp_path / "b.jpg", 100, 80, seed=1)
    exe = Path(sys.executable).with_name("mffmoe")
    out = subprocess.run([str(exe), "analyze", str(image), "-w", str(weights), "--engine", "torch",
                          "--precision", "bf16"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "not available with --engine torch" in out.stderr
