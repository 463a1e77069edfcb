"""Loading the official layouts strictly and safely, folding EMA, and the safetensors conversion."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY_SIZE
from mffmoe._util.fs import sha256_file
from mffmoe.errors import CheckpointFormatError, MissingEMAError, UnsafeCheckpointError, WeightsNotFoundError
from mffmoe.model.checkpoint import load_weights, read_info, save_safetensors
from mffmoe.testing.checkpoints import TINY_ROSTER
from mffmoe.testing.reference import RefMFFMoE


def _x(n=3, size=TINY_SIZE, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _reference_probs(directory: Path, weights: str, ema: str) -> torch.Tensor:
    """Per-forward EMA swap, as the spec does it, per expert."""
    ref = RefMFFMoE(TINY_ROSTER).load(directory, weights, ema).eval()
    x = _x()
    with torch.no_grad():
        return torch.stack([ref.forward_expert(x, i) for i in range(len(TINY_ROSTER))], dim=1)


@pytest.mark.parametrize("layout,files", [("official", ("MFF-MoE-v1.pth", "MFF-MoE-v1.state")),
                                          ("upstream", ("weight.pth", "ema.state"))])
def test_both_layouts_load_with_ema_folded(request, layout, files):
    directory = request.getfixturevalue("tiny_ckpt" if layout == "official" else "tiny_ckpt_upstream")
    model, info = load_weights(directory)
    assert info.layout == layout and info.ema and info.roster == TINY_ROSTER
    with torch.no_grad():
        ours = model(_x())
    torch.testing.assert_close(ours, _reference_probs(directory, *files), rtol=0, atol=1e-6)


def test_ema_and_batchnorm_statistics_are_used(tiny_ckpt):
    model, _ = load_weights(tiny_ckpt)
    raw = torch.load(tiny_ckpt / "MFF-MoE-v1.pth", weights_only=True)
    ema = torch.load(tiny_ckpt / "MFF-MoE-v1.state", weights_only=True)
    expert = model.experts[0]
    name, param = next(iter(expert.named_parameters()))
    # the loaded parameter is the shadow, and differs from the raw one
    torch.testing.assert_close(param, ema[0]["shadow_params"][0])
    assert not torch.allclose(param, raw[f"experts.0.{name}"])
    bn = {k: v for k, v in model.state_dict().items() if k.endswith("running_var")}
    assert bn, "tiny roster must contain BatchNorm"
    for k, v in bn.items():
        torch.testing.assert_close(v, raw[k])
        assert not torch.allclose(v, torch.ones_like(v))


def test_ema_changes_the_scores(tiny_ckpt, tmp_path):
    folded, _ = load_weights(tiny_ckpt)
    d = tmp_path / "noema"
    d.mkdir()
    shutil.copy(tiny_ckpt / "MFF-MoE-v1.pth", d)
    shutil.copy(tiny_ckpt / "mffmoe.json", d)
    raw, info = load_weights(d, allow_missing_ema=True)
    assert not info.ema
    with torch.no_grad():
        assert (folded(_x()) - raw(_x())).abs().max() > 1e-4


def test_missing_state_file_is_an_error_unless_asked(tiny_ckpt, tmp_path):
    shutil.copy(tiny_ckpt / "MFF-MoE-v1.pth", tmp_path)
    shutil.copy(tiny_ckpt / "mffmoe.json", tmp_path)
    with pytest.raises(MissingEMAError, match="allow-missing-ema"):
        load_weights(tmp_path)
    model, info = load_weights(tmp_path, allow_missing_ema=True)
    raw = torch.load(tmp_path / "MFF-MoE-v1.pth", weights_only=True)
    name, param = next(iter(model.experts[1].named_parameters()))
    torch.testing.assert_close(param, raw[f"experts.1.{name}"])


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite(path: Path, fn) -> None:
    state = torch.load(path, weights_only=True)
    fn(state)
    torch.save(state, path)


def test_missing_and_unexpected_keys_are_named(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "c")
    victim = "experts.1.baseline_extractor.stem.0.weight"
    _rewrite(d / "MFF-MoE-v1.pth", lambda s: (s.pop(victim), s.__setitem__("experts.1.bogus", torch.zeros(1))))
    with pytest.raises(CheckpointFormatError) as e:
        load_weights(d)
    assert victim in str(e.value) and "experts.1.bogus" in str(e.value)


def test_shape_mismatch_is_named(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "c")
    key = "experts.0.baseline_extractor.conv_stem.weight"
    _rewrite(d / "MFF-MoE-v1.pth", lambda s: s.__setitem__(key, torch.zeros(1, 2, 3)))
    with pytest.raises(CheckpointFormatError, match="shape mismatch.*conv_stem.weight"):
        load_weights(d)


def test_wrong_roster_is_refused(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "c")
    (d / "mffmoe.json").write_text(json.dumps({"roster": ["test_convnext", "test_efficientnet"], "input_size": 64}))
    with pytest.raises(CheckpointFormatError, match="missing key"):
        load_weights(d)


def test_shadow_list_of_wrong_length(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "c")
    _rewrite(d / "MFF-MoE-v1.state", lambda s: s[1]["shadow_params"].pop())
    with pytest.raises(CheckpointFormatError, match="expert 1 .*shadow_params has"):
        load_weights(d)


def test_missing_expert_in_state(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "c")
    _rewrite(d / "MFF-MoE-v1.state", lambda s: s.pop(0))
    with pytest.raises(CheckpointFormatError, match=r"missing \[0\]"):
        load_weights(d)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "c")
    marker = tmp_path / "pwned"
    state = torch.load(d / "MFF-MoE-v1.state", weights_only=True)
    state["payload"] = _Evil(str(marker))
    torch.save(state, d / "MFF-MoE-v1.state")
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_weights(d)
    assert not marker.exists()
    # a plain pickle file (not torch's zip format) is refused too
    with open(d / "MFF-MoE-v1.pth", "wb") as f:
        pickle.dump({"x": _Evil(str(marker))}, f)
    with pytest.raises((UnsafeCheckpointError, CheckpointFormatError)):
        load_weights(d)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "MFF-MoE-v1.pth").write_bytes(b"garbage" * 100)
    (tmp_path / "MFF-MoE-v1.state").write_bytes(b"garbage" * 100)
    with pytest.raises(CheckpointFormatError, match="not a readable"):
        load_weights(tmp_path, allow_missing_ema=True)


def test_weights_not_found_says_where_to_put_them(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="MFF-MoE-v1.pth.*MFFMOE_WEIGHTS.*models/MFF-MoE-V1"):
        load_weights(tmp_path / "nowhere")
    with pytest.raises(WeightsNotFoundError):
        load_weights(tmp_path)  # exists but empty


def test_safetensors_conversion_round_trip(tiny_ckpt, tmp_path):
    model, info = load_weights(tiny_ckpt)
    hashes = {role: sha256_file(p) for role, p in info.files.items()}
    out = save_safetensors(model, info, tmp_path / "model.safetensors", hashes)
    loaded, linfo = load_weights(out)
    assert linfo.layout == "safetensors" and linfo.roster == TINY_ROSTER and linfo.input_size == TINY_SIZE
    meta = linfo.metadata
    assert json.loads(meta["source_files"]) == {"MFF-MoE-v1.pth": hashes["weights"],
                                                 "MFF-MoE-v1.state": hashes["ema"]}
    assert json.loads(meta["ema_folded"]) is True
    with torch.no_grad():
        torch.testing.assert_close(loaded(_x()), model(_x()), rtol=0, atol=0)
    # pickle-free: the file is a JSON header plus raw bytes
    head = out.read_bytes()[:8]
    header = json.loads(out.read_bytes()[8:8 + int.from_bytes(head, "little")])
    assert "__metadata__" in header
    # a directory holding only the converted file loads too
    d = tmp_path / "dir"
    d.mkdir()
    shutil.copy(out, d / "x.safetensors")
    load_weights(d)


def test_foreign_safetensors_refused(tmp_path):
    from safetensors.torch import save_file
    save_file({"a": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointFormatError, match="not an mffmoe file"):
        load_weights(tmp_path / "x.safetensors")


def test_read_info_reports_what_loading_does_without_reading_tensors(tiny_ckpt, tmp_path):
    """The Ray scan driver identifies the weights from metadata alone; it must name the same files."""
    same = ("source", "layout", "roster", "input_size", "ema", "files")
    model, loaded = load_weights(tiny_ckpt)
    meta = read_info(tiny_ckpt)
    assert {k: getattr(meta, k) for k in same} == {k: getattr(loaded, k) for k in same}
    st = save_safetensors(model, loaded, tmp_path / "w.safetensors")
    _, loaded_st = load_weights(st)
    meta_st = read_info(tmp_path)  # a folder holding one converted file, as --weights DIR
    assert meta_st == loaded_st
    bare = tmp_path / "no_state"
    bare.mkdir()
    shutil.copy(tiny_ckpt / "MFF-MoE-v1.pth", bare)
    with pytest.raises(MissingEMAError):
        read_info(bare)
    assert read_info(bare, allow_missing_ema=True).ema is False
