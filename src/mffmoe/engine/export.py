"""Export the (EMA-folded) ensemble to ONNX and OpenVINO IR, one graph per expert, cached by weights.

One graph per expert, not one for the ensemble: engines then run experts in parallel and early exit can
stop between experts. Each graph maps a normalised image batch `input` [B, 3, S, S] (float32, dynamic B)
to `p_fake` [B] = softmax(logits)[:, 1]; the ensemble score is the mean over experts (see the manifest,
`artifacts.json`, which lists roster, input size, files, preprocessing and the combination rule).
"""
from __future__ import annotations

import atexit
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mffmoe.config import IMAGENET_MEAN, IMAGENET_STD
from mffmoe.engine.cache import (
    EXPORT_VERSION,
    FORMATS,
    MANIFEST,
    StagingDir,
    find_artifacts,
    writable_root,
    write_json,
)
from mffmoe.engine.costs import roster_gflops
from mffmoe.engine.extras import import_extra
from mffmoe.errors import ConfigError
from mffmoe.model.checkpoint import CheckpointInfo
from mffmoe.model.ensemble import MFFMoE
from mffmoe.model.experts import Expert

ONNX_OPSET = 17
log = logging.getLogger(__name__)


class _ChannelLayerNorm(nn.Module):
    """timm's `LayerNorm2d` (normalise over C of an NCHW map) written without its two permutes, so that
    the exported graph has no transposes: OpenVINO fuses this form into one normalisation op."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        x = centred * torch.rsqrt(centred.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def _without_permuting_norms(module: nn.Module) -> nn.Module:
    from timm.layers import LayerNorm2d

    for name, child in module.named_children():
        if isinstance(child, LayerNorm2d) and child.elementwise_affine:
            setattr(module, name, _ChannelLayerNorm(child))
        else:
            _without_permuting_norms(child)
    return module


def _export_backbone(expert: Expert) -> nn.Module:
    """The expert's timm network, in the form that exports to the faster graph.

    timm's ConvNeXt blocks run their MLP channels-last (`nn.Linear` between two permutes); exported,
    every block then pays for transposes and layout reorders in OpenVINO. timm's own `conv_mlp=True`
    variant computes the same function with 1x1 convolutions in NCHW, from the same numbers reshaped
    ([out, in] -> [out, in, 1, 1]); its channel LayerNorms are then written without permutes. Each step
    is faster, and the logits agree with timm's form to float rounding (docs/performance.md, "Engines").
    """
    import timm
    from timm.models.convnext import ConvNeXt, ConvNeXtBlock

    net = expert.baseline_extractor
    if not isinstance(net, ConvNeXt):
        return net
    first_block = next(m for m in net.modules() if isinstance(m, ConvNeXtBlock))
    if first_block.use_conv_mlp:
        return net
    twin = timm.create_model(expert.name, pretrained=False, num_classes=net.num_classes, conv_mlp=True)
    shapes = twin.state_dict()
    twin.load_state_dict({k: v.reshape(shapes[k].shape) for k, v in net.state_dict().items()}, strict=True)
    return _without_permuting_norms(twin).eval()


class _PFake(nn.Module):
    """One expert's network with its softmax: the graph outputs P(fake) directly."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)[:, 1]


def _manifest(fmt: str, info: CheckpointInfo, files: list[str], seconds: float,
              extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": EXPORT_VERSION[fmt], "format": fmt, "fingerprint": info.fingerprint() if info.files else None,
        "source": info.source, "roster": list(info.roster), "input_size": info.input_size, "files": files,
        "input": {"name": "input", "shape": ["batch", 3, info.input_size, info.input_size], "dtype": "float32",
                  "preprocess": "RGB -> [0,1] -> normalize(mean, std) -> resize (S, S), antialiased bilinear",
                  "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "output": {"name": "p_fake", "shape": ["batch"], "meaning": "softmax(logits)[:, 1] of one expert"},
        "combine": "mean over experts; FAKE iff mean >= threshold (0.5)",
        # what each expert costs (engines schedule and early exit by it), so that running the graphs needs no torch
        "gflops": roster_gflops(info.roster, info.input_size),
        "export_seconds": round(seconds, 2), **extra,
    }


def _temporary_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="mffmoe-export-"))
    atexit.register(shutil.rmtree, root, True)
    return root


def _export_onnx_files(model: MFFMoE, out: Path, progress: Callable[[str], object] | None = None) -> list[str]:
    model = model.eval()
    x = torch.zeros(1, 3, model.input_size, model.input_size)
    files = []
    for i, expert in enumerate(cast("Iterable[Expert]", model.experts)):
        name = f"expert-{i}.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
            torch.onnx.export(_PFake(_export_backbone(expert)), (x,), str(out / name), dynamo=False,
                              opset_version=ONNX_OPSET, input_names=["input"], output_names=["p_fake"],
                              do_constant_folding=True,
                              dynamic_axes={"input": {0: "batch"}, "p_fake": {0: "batch"}})
        files.append(name)
        if progress:
            progress(f"ONNX graph {i + 1}/{len(model.roster)} exported")
    return files


def ensure_onnx(model: MFFMoE, info: CheckpointInfo, force: bool = False,
                progress: Callable[[str], object] | None = None) -> tuple[Path, dict[str, Any]]:
    """Cached ONNX graphs for these weights, exported now if missing (seconds per expert)."""
    found = None if force else find_artifacts(info, "onnx", EXPORT_VERSION["onnx"])
    if found:
        return found
    import_extra("onnx", "ONNX export")  # torch's exporter needs it, and says so only as a RuntimeError
    final = (writable_root(info) if info.files else _temporary_root()) / "onnx"

    def build(out: Path) -> None:
        t0 = time.perf_counter()
        files = _export_onnx_files(model, out, progress)
        write_json(out / MANIFEST, _manifest("onnx", info, files, time.perf_counter() - t0,
                                             {"opset": ONNX_OPSET, "torch": torch.__version__}))

    return _staged(final, build)


def ensure_openvino(model: MFFMoE, info: CheckpointInfo, force: bool = False,
                    progress: Callable[[str], object] | None = None) -> tuple[Path, dict[str, Any]]:
    """Cached OpenVINO IR (fp32 weights: `compress_to_fp16=False`), converted from the cached ONNX, with a
    static [1, 3, S, S] input: the engine runs images one at a time (a batch gains nothing per image on a
    small CPU), a static graph is faster, and a graph compiled from its file path is looked up in
    OpenVINO's compiled-model cache without being read and hashed first (0.8 s instead of 2.3 s to load
    the seven experts)."""
    found = None if force else find_artifacts(info, "openvino", EXPORT_VERSION["openvino"])
    if found:
        return found
    ov = import_extra("openvino", "OpenVINO export")

    onnx_dir, onnx_manifest = ensure_onnx(model, info, force=force, progress=progress)
    final = (onnx_dir.parent if not info.files else writable_root(info)) / "openvino"

    def build(out: Path) -> None:
        t0 = time.perf_counter()
        files = []
        for i, name in enumerate(onnx_manifest["files"]):
            xml = f"expert-{i}.xml"
            graph = ov.convert_model(str(onnx_dir / name))
            graph.reshape([1, 3, info.input_size, info.input_size])
            ov.save_model(graph, str(out / xml), compress_to_fp16=False)
            files += [xml, f"expert-{i}.bin"]
            if progress:
                progress(f"OpenVINO graph {i + 1}/{len(info.roster)} converted ({time.perf_counter() - t0:.0f} s)")
        write_json(out / MANIFEST, _manifest("openvino", info, files, time.perf_counter() - t0,
                                             {"openvino": ov.get_version(), "from": "onnx"}))

    return _staged(final, build)


def _staged(final: Path, build: Callable[[Path], None]) -> tuple[Path, dict[str, Any]]:
    """Build an artefact directory in a staging directory and move it in only when complete."""
    stage = StagingDir(final)
    try:
        build(stage.path)
    except BaseException:
        stage.discard()
        raise
    d = stage.commit()
    log.info("exported %s", d)
    return d, _read(d)


def _read(d: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((d / MANIFEST).read_text())
    return manifest


EXPORTERS = {"onnx": ensure_onnx, "openvino": ensure_openvino}


def export(fmt: str, model: MFFMoE, info: CheckpointInfo, out: Path | None = None,
           force: bool = False) -> Path:
    """Export (or reuse the cached export) and, with `out`, copy the artefact directory there too.
    Raises MissingExtraError without the `engines` extra, CacheNotWritableError where nothing can be
    written."""
    try:
        exporter = EXPORTERS[fmt]
    except KeyError:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {list(FORMATS)}") from None
    d, _ = exporter(model, info, force=force)
    if out is not None:
        out = Path(out)
        if out.resolve() != d.resolve():
            shutil.copytree(d, out, dirs_exist_ok=True)
        return out
    return d
