"""Weight verification (`mffmoe verify`, `mffmoe.model.verify`, `mffmoe.inference.golden`): a random
checkpoint with golden files it wrote itself passes; a flipped byte, a NaN, a wrong golden name, EMA
shadows equal to the raw weights, a non-positive BatchNorm variance each fail, naming the check."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import TINY_SIZE
from mffmoe._util.fs import sha256_file
from mffmoe.cli import app
from mffmoe.errors import WeightsNotFoundError
from mffmoe.inference.detector import Detector
from mffmoe.inference.golden import golden_files, verify
from mffmoe.model import verify as verify_module
from mffmoe.model.checkpoint import load_weights, save_safetensors
from mffmoe.model.verify import structural_checks
from mffmoe.testing.checkpoints import TINY_ROSTER, make_random_checkpoint
from mffmoe.testing.media import make_image
from server_helpers import checked_health

runner = CliRunner()
STRUCTURE = ["readable MFF-MoE-v1.pth", "readable MFF-MoE-v1.state", "roster", "finite", "batchnorm variances",
             "EMA shadows"]


def run(*args):
    return runner.invoke(app, ["verify", *map(str, args)], catch_exceptions=False)


def by_name(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


@pytest.fixture(scope="module")
def golden(tiny_ckpt, tmp_path_factory) -> Path:
    """Images named by the scores the tiny checkpoint gives them (frame mode, torch engine)."""
    d = tmp_path_factory.mktemp("golden")
    detector = Detector.from_dir(tiny_ckpt, device="cpu", engine="torch", crop="frame")
    for i, (w, h) in enumerate([(96, 80), (64, 120), (150, 100)]):
        image = make_image(d / f"img_{i}.png", w, h, seed=10 + i)
        image.rename(d / f"img_{i}_should_be_{detector.analyze(image).score:.16f}.png")
    (d / "README.txt").write_text("not a golden file: ignored\n")
    return d


@pytest.fixture
def ckpt(tiny_ckpt, tmp_path) -> Path:
    """A copy of the tiny checkpoint that a test may damage."""
    return Path(shutil.copytree(tiny_ckpt, tmp_path / "weights"))


def test_passes_on_a_random_checkpoint_with_its_golden_files(ckpt, golden):
    report = verify(ckpt, golden)
    assert report.ok and report.layout == "official" and not report.failed
    names = by_name(report)
    assert [c.name for c in report.checks if c.group == "structure"] == STRUCTURE
    assert all(names[n] == "pass" for n in STRUCTURE)
    goldens = [c for c in report.checks if c.group == "golden"]
    assert len(goldens) == 3 == len(golden_files(golden)) and all(c.status == "pass" for c in goldens)
    # no published digest is known here: printed for the user to compare, neither pass nor fail
    for f in ("MFF-MoE-v1.pth", "MFF-MoE-v1.state"):
        check = next(c for c in report.checks if c.name == f"sha256 {f}")
        assert check.status == "unknown" and check.detail.startswith(sha256_file(ckpt / f))
        assert "compare with the publisher's" in check.detail
    res = run("--weights", ckpt, "--golden", golden, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["ok"] is True and len(data["checks"]) == 2 + len(STRUCTURE) + 3
    table = run("-w", ckpt, "-g", golden)
    assert table.exit_code == 0 and "EMA shadows" in table.stdout and "PASS" in table.stdout


def _flip_inside_a_shadow(state_file: Path) -> None:
    """Change one byte of a float inside the data of expert 0's first EMA shadow (the weights inference
    uses): the top byte of a small weight, so the value grows by 2^6 or more and stays finite."""
    shadow = torch.load(state_file, weights_only=True)[0]["shadow_params"][0].contiguous()
    data = bytearray(state_file.read_bytes())
    offset = data.find(shadow.numpy().tobytes())
    assert offset > 0 and data.find(shadow.numpy().tobytes(), offset + 1) == -1
    values = shadow.flatten().tolist()
    i = next(i for i, v in enumerate(values) if 2 ** -10 < abs(v) < 2 ** -3)
    data[offset + 4 * i + 3] ^= 0xFF
    (flipped,) = struct.unpack("<f", bytes(data[offset + 4 * i: offset + 4 * i + 4]))
    assert 8 <= abs(flipped) < 1e6
    state_file.write_bytes(data)


def test_a_flipped_byte_fails_the_hash_and_the_golden_check(ckpt, golden, monkeypatch):
    known = {f: sha256_file(ckpt / f) for f in ("MFF-MoE-v1.pth", "MFF-MoE-v1.state")}
    monkeypatch.setattr(verify_module, "KNOWN_SHA256", known)
    assert all(by_name(verify(ckpt, hashes=True))[f"sha256 {f}"] == "pass" for f in known)
    _flip_inside_a_shadow(ckpt / "MFF-MoE-v1.state")
    report = verify(ckpt, golden)
    names = by_name(report)
    assert names["sha256 MFF-MoE-v1.state"] == "fail" and names["sha256 MFF-MoE-v1.pth"] == "pass"
    assert all(names[n] == "pass" for n in STRUCTURE)  # finite and well-formed: only a known score tells
    assert all(c.status == "fail" for c in report.checks if c.group == "golden")  # scores move by 0.1 to 0.3
    res = run("-w", ckpt, "-g", golden)
    assert res.exit_code == 1
    assert "verification failed: sha256 MFF-MoE-v1.state, golden img_" in res.stderr


def test_a_nan_fails_the_finite_check(ckpt):
    state = torch.load(ckpt / "MFF-MoE-v1.pth", weights_only=True)
    key = next(k for k in state if k.endswith("conv_stem.weight"))
    state[key].view(-1)[5] = float("nan")
    torch.save(state, ckpt / "MFF-MoE-v1.pth")
    report = verify(ckpt)
    (failed,) = report.failed
    assert failed.name == "finite" and key in failed.detail and "(1 of" in failed.detail
    res = run("-w", ckpt)
    assert res.exit_code == 1 and "verification failed: finite" in res.stderr


def test_a_golden_name_stating_another_score_fails(ckpt, golden, tmp_path):
    wrong = tmp_path / "wrong"
    shutil.copytree(golden, wrong)
    first = sorted(wrong.glob("img_0_*"))[0]
    score = float(first.name.split("_should_be_")[1].removesuffix(".png"))
    renamed = first.rename(wrong / f"img_0_should_be_{score + 0.01:.16f}.png")
    report = verify(ckpt, wrong, hashes=False)
    (failed,) = report.failed
    assert failed.name == f"golden {renamed.name}" and "difference 1.00e-02" in failed.detail
    within = renamed.rename(wrong / f"img_0_should_be_{score + 0.0005:.16f}.png")  # inside the 1e-3 tolerance
    assert by_name(verify(ckpt, wrong, hashes=False))[f"golden {within.name}"] == "pass"
    res = run("-w", ckpt, "-g", wrong)
    assert res.exit_code == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert by_name(verify(ckpt, empty, hashes=False))["golden"] == "fail"


def test_ema_equal_to_raw_fails(tmp_path):
    same = make_random_checkpoint(tmp_path / "w", TINY_ROSTER, TINY_SIZE, ema_scale=0.0)
    (failed,) = verify(same).failed
    assert failed.name == "EMA shadows" and "equal the raw parameters" in failed.detail


def test_missing_ema_fails_unless_allowed(ckpt):
    (ckpt / "MFF-MoE-v1.state").unlink()
    (failed,) = verify(ckpt).failed
    assert failed.name == "EMA shadows" and "missing" in failed.detail
    allowed = {c.name: c.status for c in structural_checks(ckpt, allow_missing_ema=True)}
    assert allowed["EMA shadows"] == "skipped" and "fail" not in allowed.values()


@pytest.mark.parametrize("value", [0.0, -0.5, float("nan")])
def test_a_non_positive_batchnorm_variance_fails(ckpt, value):
    state = torch.load(ckpt / "MFF-MoE-v1.pth", weights_only=True)
    key = next(k for k in state if k.endswith("running_var"))
    state[key][0] = value
    torch.save(state, ckpt / "MFF-MoE-v1.pth")
    names = by_name(verify(ckpt))
    assert names["batchnorm variances"] == "fail"
    assert names["finite"] == ("fail" if value != value else "pass")


def test_unreadable_file_and_wrong_roster_are_failed_checks(ckpt):
    (ckpt / "MFF-MoE-v1.pth").write_bytes((ckpt / "MFF-MoE-v1.pth").read_bytes()[:5000])  # truncated
    names = by_name(verify(ckpt))
    assert names["readable MFF-MoE-v1.pth"] == "fail" and names["roster"] == "skipped"
    res = run("-w", ckpt)
    assert res.exit_code == 1 and "readable MFF-MoE-v1.pth" in res.stderr


def test_a_roster_that_does_not_match_the_keys_fails(ckpt):
    manifest = json.loads((ckpt / "mffmoe.json").read_text())
    (ckpt / "mffmoe.json").write_text(json.dumps({**manifest, "roster": ["test_efficientnet", "test_efficientnet"]}))
    report = verify(ckpt)
    names = by_name(report)
    assert names["roster"] == "fail" and names["EMA shadows"] == "skipped"
    assert "does not match the roster" in report.failed[0].detail


def test_no_weights_is_a_usage_error(tmp_path):
    with pytest.raises(WeightsNotFoundError):
        verify(tmp_path)
    assert run("-w", tmp_path).exit_code == 2


def test_upstream_and_converted_layouts(tiny_ckpt_upstream, tiny_ckpt, golden, tmp_path):
    upstream = verify(tiny_ckpt_upstream, golden, hashes=False)
    assert upstream.ok and by_name(upstream)["readable weight.pth"] == "pass"
    model, info = load_weights(tiny_ckpt)
    converted = save_safetensors(model, info, tmp_path / "tiny.safetensors")
    report = verify(converted, golden)
    assert report.ok and report.layout == "safetensors"
    ema = next(c for c in report.checks if c.name == "EMA shadows")
    assert ema.status == "skipped" and "not applicable" in ema.detail
    assert by_name(report)["finite"] == by_name(report)["roster"] == "pass"


def test_a_locally_trained_checkpoint_is_not_failed_for_its_hash(ckpt):
    known = {"MFF-MoE-v1.pth": "0" * 64}
    assert by_name(verify(ckpt, known=known))["sha256 MFF-MoE-v1.pth"] == "fail"
    manifest = json.loads((ckpt / "mffmoe.json").read_text())
    (ckpt / "mffmoe.json").write_text(json.dumps({**manifest, "trained": {"epochs_done": 1}}))
    assert by_name(verify(ckpt, known=known))["sha256 MFF-MoE-v1.pth"] == "unknown"


def test_health_shows_a_failed_check_and_keeps_serving(ckpt, tmp_path):
    from mffmoe.server.app import create_app
    from mffmoe.server.settings import ServerSettings

    state = torch.load(ckpt / "MFF-MoE-v1.pth", weights_only=True)
    key = next(k for k in state if k.endswith("running_var"))
    state[key][0] = -1.0
    torch.save(state, ckpt / "MFF-MoE-v1.pth")
    detector = Detector.from_dir(ckpt, device="cpu", crop="frame")
    settings = ServerSettings(db_path=tmp_path / "jobs.sqlite3", upload_dir=tmp_path / "uploads", api_key=None)
    with TestClient(create_app(detector, settings)) as client:
        body = checked_health(client)
        assert client.get("/health").status_code == 200 and client.get("/ping").status_code == 200
        assert body["status"] == "degraded" and body["ready"] is True and body["weights"]["ok"] is False
        failed = [c for c in body["weights"]["checks"] if c["status"] == "fail"]
        assert [c["name"] for c in failed] == ["batchnorm variances"] and key in failed[0]["detail"]


def test_large_weights_are_checked_in_a_child_process(ckpt, monkeypatch):
    """The full weights' pages must not stay in the server: above CHILD_CHECK_BYTES the checks run in a
    spawned process, with the same result."""
    from mffmoe.server.routes import meta

    detector = Detector.from_dir(ckpt, device="cpu", crop="frame")
    in_thread = meta.weights_checks(detector)
    monkeypatch.setattr(meta, "CHILD_CHECK_BYTES", 0)
    calls = []
    real = meta.ProcessPoolExecutor
    monkeypatch.setattr(meta, "ProcessPoolExecutor", lambda *a, **k: calls.append(k) or real(*a, **k))
    assert meta.weights_checks(detector) == in_thread and in_thread["ok"] is True
    assert calls and calls[0]["mp_context"].get_start_method() == "spawn"


def test_random_weights_have_nothing_to_verify():
    from mffmoe.server.routes.meta import weights_checks

    result = weights_checks(Detector.untrained(TINY_ROSTER, TINY_SIZE, device="cpu", engine="torch"))
    assert result["ok"] is True and [(c["name"], c["status"]) for c in result["checks"]] == [("weights", "skipped")]
