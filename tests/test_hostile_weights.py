"""Hostile checkpoints: metadata that lies about the roster or the input size is refused, typed and early."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mffmoe.cli import app
from mffmoe.errors import CheckpointFormatError, WeightsNotFoundError
from mffmoe.model import checkpoint
from mffmoe.model.checkpoint import load_weights, read_info, save_safetensors
from mffmoe.testing.checkpoints import TINY_ROSTER

BAD_MANIFESTS = {
    "huge_input_size": ({"roster": list(TINY_ROSTER), "input_size": 1_000_000}, "input_size must be an integer"),
    "float_input_size": ({"roster": list(TINY_ROSTER), "input_size": 64.5}, "input_size must be an integer"),
    "roster_string": ({"roster": "test_efficientnet", "input_size": 64}, "roster must be a list"),
    "roster_numbers": ({"roster": [1, 2], "input_size": 64}, "roster must be a list"),
    "unknown_model": ({"roster": ["test_efficientnet", "no_such_net"], "input_size": 64}, "'no_such_net'"),
    "too_many": ({"roster": ["test_efficientnet"] * 10_000, "input_size": 64}, "1 to 32 experts, got 10000"),
    "count_differs": ({"roster": [*TINY_ROSTER, "test_convnext"], "input_size": 64}, "holds 2 expert"),
    "not_an_object": ([1, 2, 3], "expected a JSON object"),
}


def _with_manifest(src: Path, dst: Path, manifest: object | str) -> Path:
    shutil.copytree(src, dst)
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (dst / "mffmoe.json").write_text(text)
    return dst


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_is_refused_before_building(tiny_ckpt, tmp_path, monkeypatch, case):
    manifest, message = BAD_MANIFESTS[case]
    d = _with_manifest(tiny_ckpt, tmp_path / case, manifest)

    def never(*args, **kwargs):
        raise AssertionError("a model was built for refused metadata")

    monkeypatch.setattr(checkpoint, "build_model", never)
    with pytest.raises(CheckpointFormatError, match=message):
        load_weights(d)


def test_non_json_manifest(tiny_ckpt, tmp_path):
    d = _with_manifest(tiny_ckpt, tmp_path / "c", "{roster: nope")
    with pytest.raises(CheckpointFormatError, match="not JSON"):
        read_info(d)


def _safetensors_with(src: Path, out: Path, **meta: str) -> Path:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as f:
        metadata = {**f.metadata(), **meta}
    save_file(load_file(str(src)), str(out), metadata=metadata)
    return out


BAD_METADATA = {
    "roster_not_json": ({"roster": "[test_efficientnet"}, "'roster' is not JSON"),
    "roster_string": ({"roster": json.dumps("test_efficientnet")}, "roster must be a list"),
    "input_size_float": ({"input_size": "1e6"}, "input_size must be an integer"),
    "input_size_huge": ({"input_size": "1000000"}, "input_size must be an integer"),
    "unknown_model": ({"roster": json.dumps(["test_efficientnet", "bogus_net"])}, "'bogus_net'"),
    "count_differs": ({"roster": json.dumps(["test_efficientnet"])}, "holds 2 expert"),
    "ema_not_bool": ({"ema_folded": '"yes"'}, "'ema_folded' must be true or false"),
    "updates_not_list": ({"ema_num_updates": "{}"}, "'ema_num_updates' must be a list"),
}


@pytest.fixture(scope="module")
def converted(tiny_ckpt, tmp_path_factory) -> Path:
    model, info = load_weights(tiny_ckpt)
    return save_safetensors(model, info, tmp_path_factory.mktemp("st") / "w.safetensors")


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_bad_safetensors_metadata_is_refused(converted, tmp_path, case):
    meta, message = BAD_METADATA[case]
    bad = _safetensors_with(converted, tmp_path / f"{case}.safetensors", **meta)
    with pytest.raises(CheckpointFormatError, match=message):
        load_weights(bad)
    with pytest.raises(CheckpointFormatError, match=message):
        read_info(bad)


@pytest.mark.parametrize("case", ["huge_input_size", "roster_string", "unknown_model", "too_many"])
def test_info_prints_one_error_line_without_a_traceback(tiny_ckpt, tmp_path, case):
    d = _with_manifest(tiny_ckpt, tmp_path / case, BAD_MANIFESTS[case][0])
    res = CliRunner().invoke(app, ["info", "--weights", str(d)])
    assert res.exit_code == 2, res.output
    assert res.output.count("error:") == 1 and "Traceback" not in res.output
    assert isinstance(res.exception, SystemExit)


def test_info_on_non_json_safetensors_metadata(converted, tmp_path):
    bad = _safetensors_with(converted, tmp_path / "x.safetensors", roster="not json")
    res = CliRunner().invoke(app, ["info", "--weights", str(bad)])
    assert res.exit_code == 2 and res.output.count("error:") == 1 and "Traceback" not in res.output


def test_not_found_hint_names_a_command_that_accepts_untrained(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        load_weights(tmp_path / "nowhere")
    assert "`mffmoe analyze --untrained`" in str(e.value)
    res = CliRunner().invoke(app, ["info", "--weights", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "mffmoe analyze --untrained" in " ".join(res.output.split())
