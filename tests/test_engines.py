"""Engines: every engine agrees with torch (1e-4) on a tiny roster; exports are cached by weights; `auto`
decides from the calibration record; the lean torch engine gives the same numbers. No timings here."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mffmoe.engine import ENGINES, create_engine
from mffmoe.engine import auto as auto_mod
from mffmoe.engine.cache import CACHE_DIRNAME
from mffmoe.engine.calibrate import calibrate
from mffmoe.engine.export import ensure_onnx, export
from mffmoe.model.checkpoint import load_weights
from mffmoe.testing.checkpoints import TINY_ROSTER, make_random_checkpoint

SIZE = 64
OPTIONAL = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """Our own checkpoint: exports and calibration records written here must not reach other tests. Its
    BatchNorm statistics are measured on natural-looking images, so no expert saturates on such inputs
    and a wrong graph cannot hide behind probabilities of 0 or 1."""
    return make_random_checkpoint(tmp_path_factory.mktemp("engines_ckpt"), TINY_ROSTER, SIZE, seed=3,
                                  measured_bn=True)


@pytest.fixture(scope="module")
def loaded(ckpt):
    return load_weights(ckpt)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    from mffmoe.media.samples import sample_batch

    return sample_batch(3, SIZE, seed=1)  # natural-looking images (not noise), preprocessed as the spec does


def test_the_engines_checkpoint_keeps_every_expert_in_range(torch_probs):
    """What makes agreement meaningful: every expert's P(fake) on the test images is away from 0 and 1
    (logit within +-8) and differs between images."""
    logits = np.log(torch_probs) - np.log1p(-torch_probs)
    assert np.all(np.abs(logits) < 8), logits
    assert np.all(torch_probs.std(axis=0) > 1e-4), torch_probs


@pytest.fixture(scope="module")
def torch_probs(loaded, batch) -> np.ndarray:
    model, info = loaded
    return create_engine("torch", model, info, device="cpu").predict(batch)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_engine_agrees_with_torch(name, loaded, batch, torch_probs):
    pytest.importorskip(OPTIONAL[name])
    model, info = loaded
    engine = create_engine(name, model, info, device="cpu")
    probs = engine.predict(batch)
    assert probs.shape == (3, len(TINY_ROSTER)) and probs.dtype == np.float64
    assert np.max(np.abs(probs - torch_probs)) <= 1e-4
    # a subset of experts, in the order asked for, and batch 1
    sub = engine.predict_experts(batch[:1], [1, 0])
    assert np.max(np.abs(sub - torch_probs[:1, [1, 0]])) <= 1e-4


def test_torch_engine_layouts_and_workers_agree(loaded, batch, torch_probs):
    model, info = loaded
    for kw in ({"workers": 1}, {"channels_last": False}, {"channels_last": True, "workers": 2}):
        probs = create_engine("torch", model, info, device="cpu", **kw).predict(batch)
        assert np.max(np.abs(probs - torch_probs)) <= 1e-5, kw


def test_torch_engine_leaves_thread_setting_alone(loaded, batch):
    model, info = loaded
    before = torch.get_num_threads()
    engine = create_engine("torch", model, info, device="cpu", workers=2)
    engine.predict(batch)
    assert torch.get_num_threads() == before


def test_lean_engine_releases_file_pages_and_matches(ckpt, batch, torch_probs):
    model, info = load_weights(ckpt)  # fresh: the lean engine must see the file-mapped tensors
    engine = create_engine("torch", model, info, device="cpu", lean=True)
    assert engine.lean and engine.workers == 1
    assert engine._pager.active and engine._pager.mapped_bytes > 0
    for _ in range(2):  # the second pass reads weights whose pages were dropped after the first
        probs = engine.predict(batch)
        assert np.max(np.abs(probs - torch_probs)) <= 1e-5


def test_export_is_cached_by_weights_and_described(ckpt, loaded):
    pytest.importorskip("onnxruntime")
    model, info = loaded
    d1, manifest = ensure_onnx(model, info)
    assert d1.parent.name == info.fingerprint() and d1.parent.parent.name == CACHE_DIRNAME
    assert manifest["roster"] == list(TINY_ROSTER) and manifest["input_size"] == SIZE
    assert len(manifest["files"]) == len(TINY_ROSTER) and manifest["output"]["name"] == "p_fake"
    mtimes = {f: (d1 / f).stat().st_mtime_ns for f in manifest["files"]}
    d2, _ = ensure_onnx(model, info)  # cached: nothing written again
    assert d2 == d1 and mtimes == {f: (d1 / f).stat().st_mtime_ns for f in manifest["files"]}


def test_export_falls_back_to_user_cache_when_weights_dir_is_read_only(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    ckpt = make_random_checkpoint(tmp_path / "w", TINY_ROSTER, SIZE, seed=4)
    model, info = load_weights(ckpt)
    monkeypatch.setenv("MFFMOE_CACHE_DIR", str(tmp_path / "user-cache"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == ckpt else real_access(p, m))
    out = export("onnx", model, info)
    assert out == tmp_path / "user-cache" / info.fingerprint() / "onnx"
    assert not (ckpt / CACHE_DIRNAME).exists()
    # an engine finds it there too
    engine = create_engine("onnxruntime", model, info, device="cpu")
    assert engine.artifacts == out


def test_changed_weights_get_a_new_cache_entry(tmp_path):
    ckpt = make_random_checkpoint(tmp_path / "w", TINY_ROSTER, SIZE, seed=5)
    _, info = load_weights(ckpt)
    before = info.fingerprint()
    st = (ckpt / "MFF-MoE-v1.state").stat()
    os.utime(ckpt / "MFF-MoE-v1.state", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_weights(ckpt)[1].fingerprint() != before


def test_unknown_engine_and_cuda_only_requests_are_errors(loaded):
    model, info = loaded
    with pytest.raises(ValueError, match="unknown engine"):
        create_engine("tensorrt", model, info)
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match="CPU"):
        create_engine("onnxruntime", model, info, device="cuda")
    assert {"torch", "onnxruntime", "openvino", "auto"} <= set(ENGINES)


def test_auto_without_record_is_torch(tmp_path):
    ckpt = make_random_checkpoint(tmp_path / "w", TINY_ROSTER, SIZE, seed=6)
    model, info = load_weights(ckpt)
    choice = auto_mod.choose_engine(info, device="cpu")
    assert choice.name == "torch" and "no calibration record" in choice.reason
    assert create_engine("auto", model, info, device="cpu", lean=True).name == "torch"


def _record(info, engines: dict, machine=None) -> None:
    from mffmoe.engine.cache import writable_root, write_json
    write_json(writable_root(info) / auto_mod.RECORD, {
        "version": auto_mod.RECORD_VERSION, "fingerprint": info.fingerprint(),
        "machine": machine or auto_mod.machine(), "engines": engines})


def test_auto_follows_the_calibration_record(ckpt, loaded):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    model, info = loaded
    export("onnx", model, info)
    export("openvino", model, info)
    record = calibrate(model, info, log=lambda m: None)
    assert set(record["engines"]) == {"torch", "onnxruntime", "openvino"}
    assert all(r["ok"] and r["max_abs_diff"] <= 1e-4 for r in record["engines"].values())
    assert all(set(r["max_abs_diff_per_expert"]) == set(TINY_ROSTER) for r in record["engines"].values())
    assert json.loads((ckpt / CACHE_DIRNAME / info.fingerprint() / auto_mod.RECORD).read_text())["engines"]

    fast = {"ok": True, "max_abs_diff": 1e-7, "load_s": 5.0, "latency_s": 0.5}
    _record(info, {"torch": {"ok": True, "max_abs_diff": 0, "load_s": 0.1, "latency_s": 1.0},
                   "onnxruntime": fast, "openvino": {**fast, "latency_s": 0.8}})
    assert auto_mod.choose_engine(info, "cpu").name == "onnxruntime"          # steady state: latency
    assert auto_mod.choose_engine(info, "cpu", images=1).name == "torch"      # one image: load dominates
    assert auto_mod.choose_engine(info, "cpu", images=1000).name == "onnxruntime"
    engine = create_engine("auto", model, info, device="cpu", lean=True, images=1000)
    assert engine.name == "onnxruntime" and "latency" in engine.auto_reason

    _record(info, {"torch": {"ok": True, "max_abs_diff": 0, "load_s": 0.1, "latency_s": 1.0},
                   "onnxruntime": {**fast, "ok": False, "max_abs_diff": 1e-3}})
    assert auto_mod.choose_engine(info, "cpu").name == "torch"  # disagreeing engines are never picked

    _record(info, {"torch": {"ok": True, "max_abs_diff": 0, "load_s": 0.1, "latency_s": 1.0},
                   "onnxruntime": fast, "openvino": fast}, machine={"cpu": "elsewhere"})
    choice = auto_mod.choose_engine(info, "cpu")
    assert choice.name == auto_mod.STATIC_PREFERENCE[0] and "another machine" in choice.reason


def test_detector_with_exported_engine_matches_torch(ckpt, media):
    pytest.importorskip("onnxruntime")
    from mffmoe.inference.detector import Detector
    a = Detector.from_dir(ckpt, device="cpu", engine="torch").analyze(media["jpg"])
    b = Detector.from_dir(ckpt, device="cpu", engine="onnxruntime").analyze(media["jpg"])
    assert abs(a.score - b.score) <= 1e-4 and a.prediction == b.prediction


def test_export_command_writes_and_copies(ckpt, tmp_path):
    pytest.importorskip("onnxruntime")
    from typer.testing import CliRunner

    from mffmoe.cli import app
    r = CliRunner().invoke(app, ["export", "--format", "onnx", "-w", str(ckpt), "--out", str(tmp_path / "o"),
                                 "--no-calibrate"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "o" / "onnx" / "artifacts.json").read_text())
    assert all((tmp_path / "o" / "onnx" / f).exists() for f in manifest["files"])
    r = CliRunner().invoke(app, ["export", "-w", str(tmp_path / "missing")])
    assert r.exit_code != 0 and "no MFF-MoE weights" in r.output


@pytest.mark.parametrize("name", ["test_convnext", "convnextv2_atto"])
def test_export_backbone_conv_mlp_twin_is_the_same_function(name):
    """The NCHW (conv-MLP) form exported for ConvNeXt experts computes what the channels-last one does,
    GRN included (convnextv2_atto built channels-last on purpose; all parameters randomised)."""
    import timm
    from timm.layers import LayerNorm2d

    from mffmoe.engine.export import _export_backbone
    from mffmoe.model.experts import build_expert

    torch.manual_seed(0)
    expert = build_expert(name).eval()
    expert.baseline_extractor = timm.create_model(name, pretrained=False, num_classes=2, conv_mlp=False).eval()
    with torch.no_grad():
        for p in expert.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    twin = _export_backbone(expert)
    assert twin is not expert.baseline_extractor and twin.stages[0].blocks[0].use_conv_mlp
    assert not any(isinstance(m, LayerNorm2d) for m in twin.modules())  # no permuting norms left
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = expert(x), twin(x)
    assert a.abs().max() > 1e-3  # not a degenerate all-zero output
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_torch_cpu_scores_do_not_depend_on_the_batch(loaded, batch, torch_probs):
    """On the CPU the torch engine runs one image per expert forward (CPU_MICRO_BATCH: faster there), so
    an image's experts are the same bits whether it comes alone or in a batch."""
    model, info = loaded
    engine = create_engine("torch", model, info, device="cpu")
    alone = np.concatenate([engine.predict(batch[i:i + 1]) for i in range(len(batch))])
    assert np.array_equal(alone, torch_probs)


def test_openvino_not_resident_holds_no_expert_and_gives_the_same_numbers(loaded, batch, ckpt, media):
    """`resident=False` (one-shot jobs) compiles each expert for a call and frees it: between calls it
    holds no compiled expert, its scores are those of the resident engine exactly, and the detector hands
    it batches of at least `STREAMED_BATCH` (each call compiles every expert once)."""
    pytest.importorskip("openvino")
    from mffmoe.engine.openvino_engine import STREAMED_BATCH
    from mffmoe.inference.detector import Detector

    model, info = loaded
    resident = create_engine("openvino", model, info, device="cpu")
    streamed = create_engine("openvino", model, info, device="cpu", resident=False)
    assert len(resident.compiled) == len(TINY_ROSTER) and streamed.compiled == [] and streamed.requests == []
    np.testing.assert_array_equal(streamed.predict(batch), resident.predict(batch))
    np.testing.assert_array_equal(streamed.predict_experts(batch[:1], [1, 0]),
                                  resident.predict_experts(batch[:1], [1, 0]))
    assert streamed.compiled == [] and streamed.describe()["resident"] is False
    assert resident.describe()["resident"] is True
    assert (resident.max_useful_batch, resident.min_useful_batch) == (4, None)
    assert (streamed.max_useful_batch, streamed.min_useful_batch) == (None, STREAMED_BATCH)

    d = Detector.from_dir(ckpt, device="cpu", engine="openvino", engine_options={"resident": False}, batch_size=4)
    assert d.batch_size == STREAMED_BATCH
    ref = Detector.from_dir(ckpt, device="cpu", engine="openvino")
    assert ref.batch_size == 4
    assert d.analyze(media["jpg"]).score == ref.analyze(media["jpg"]).score


def test_one_shot_jobs_ask_for_streamed_experts_and_others_do_not():
    """`mffmoe analyze` and scans run OpenVINO not resident (auto passes the option on only to OpenVINO);
    the torch and onnxruntime engines, which do not take it, are left alone."""
    from mffmoe.cli.analyze import analyze_engine_options
    from mffmoe.config import DetectorConfig
    from mffmoe.engine.openvino_engine import STREAMED_BATCH
    from mffmoe.media.probe import MediaKind
    from mffmoe.scan.job import one_shot

    for name in ("auto", "openvino", "ov"):
        assert analyze_engine_options(name, [MediaKind.IMAGE] * 2, 16)["resident"] is False
    for name in ("torch", "onnxruntime"):
        assert "resident" not in analyze_engine_options(name, [MediaKind.IMAGE] * 2, 16)
    assert "resident" in auto_mod.ACCEPTS["openvino"] and "resident" not in auto_mod.ACCEPTS["torch"]
    scan = one_shot(DetectorConfig(untrained=True, batch_size=8))
    assert scan.engine_options["resident"] is False and scan.batch_size == STREAMED_BATCH
    kept = DetectorConfig(untrained=True, engine_options={"resident": True})
    assert one_shot(kept) is kept
    torch_cfg = DetectorConfig(untrained=True, engine="torch", batch_size=8)
    assert one_shot(torch_cfg) is torch_cfg


def test_openvino_lighter_compiles_the_cheapest_per_call_until_told_to_hold_all(loaded, batch):
    """`lighter()` (videos, faces mode) lets go of the cheapest experts and compiles them per call; the
    scores are those of the resident engine exactly, inside the block and after `hold_all`."""
    pytest.importorskip("openvino")
    model, info = loaded
    engine = create_engine("openvino", model, info, device="cpu", lighter_experts=1)
    before = engine.predict(batch)
    cheapest = int(np.argmin(engine.costs))
    with engine.lighter():
        assert engine.light and engine.compiled[cheapest] is None
        assert all(c is not None for i, c in enumerate(engine.compiled) if i != cheapest)
        np.testing.assert_array_equal(engine.predict(batch), before)
    assert engine.light  # a run of such calls pays the switch once
    np.testing.assert_array_equal(engine.predict(batch), before)
    engine.hold_all()
    assert not engine.light and all(c is not None for c in engine.compiled)
    np.testing.assert_array_equal(engine.predict(batch), before)
    # with nothing it could let go of, the block changes nothing
    whole = create_engine("openvino", model, info, device="cpu", lighter_experts=len(TINY_ROSTER))
    with whole.lighter():
        assert not whole.light


def test_detector_is_lighter_for_faces_and_holds_all_again_after_a_frame_image(ckpt, media):
    """Faces-mode calls and videos run the engine lighter; the next frame-mode image call holds every
    expert again and lets the face detector's graphs go. Scores never change."""
    pytest.importorskip("openvino")
    from mffmoe.inference.detector import Detector

    d = Detector.from_dir(ckpt, device="cpu", engine="openvino", engine_options={"lighter_experts": 1},
                          crop="frame")
    first = d.analyze(media["jpg"]).score
    assert not d.engine.light
    faces = d.analyze(media["jpg"], crop="faces")
    assert d.engine.light and d.finder_for("faces").detector._graphs._compiled
    video = d.analyze(media["mp4"], frames=4)
    assert d.engine.light  # a video leaves it lighter too
    assert d.analyze(media["jpg"]).score == first
    assert not d.engine.light and not d.finder_for("faces").detector._graphs._compiled
    assert d.analyze(media["jpg"], crop="faces").score == faces.score
    assert d.analyze(media["mp4"], frames=4).score == video.score


def _resident_kb(path: Path) -> int:
    """This process's resident kB of its mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and ":" not in head[0]:
                inside = len(head) >= 6 and head[5] == str(path)
            elif inside and head and head[0] == "Rss:":
                total += int(head[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux only")
def test_dropping_gives_back_the_pages_of_files_read_while_it_runs(tmp_path):
    """`memory.dropping` (used while an OpenVINO expert is compiled from its blob): a file read inside the
    block leaves no resident pages in this process, and its contents stay readable (clean file pages)."""
    from mffmoe.engine.memory import dropping

    path = tmp_path / "blob.bin"
    data = np.arange(4 << 20, dtype=np.uint32)  # 16 MB
    data.tofile(path)
    mapped = np.memmap(path, dtype=np.uint32, mode="r")
    assert int(mapped.sum(dtype=np.uint64)) == int(data.sum(dtype=np.uint64))
    assert _resident_kb(path.resolve()) > 8 << 10
    with dropping([path]):
        assert int(mapped[::1024].sum(dtype=np.uint64)) == int(data[::1024].sum(dtype=np.uint64))
    assert _resident_kb(path.resolve()) == 0
    assert np.array_equal(mapped[-8:], data[-8:])  # read back from the page cache


def test_the_scheduler_runs_each_expert_while_holding_the_activations_lock():
    """One network's activations at a time (`_util.activations`): a face detection on a decoding thread
    never runs beside an expert, in either scheduling plan."""
    from mffmoe._util.activations import ACTIVATIONS
    from mffmoe.engine.scheduler import ExpertScheduler

    seen: list[bool] = []

    def run_one(i: int, batch: object) -> np.ndarray:
        seen.append(ACTIVATIONS.locked())
        return np.full(2, float(i))

    for workers in (1, 2):
        out = ExpertScheduler(run_one, [1.0, 2.0, 3.0], workers).run(None, [0, 1, 2])
        np.testing.assert_array_equal(out, [[0, 1, 2], [0, 1, 2]])
    assert seen == [True] * 6 and not ACTIVATIONS.locked()
