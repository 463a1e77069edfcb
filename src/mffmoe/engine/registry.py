"""Engines by name: `create_engine("torch" | "onnxruntime" | "openvino" | "auto", weights, info, ...)`.

Import-light on purpose: each factory imports its engine (and the torch/timm stack behind it) on first
use, so that naming engines (the CLI's `--engine` choices) costs nothing. `weights` is a model in memory
or a `WeightsSource` (loaded only by an engine that needs the torch model), so that an engine running
cached graphs never imports torch.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mffmoe.errors import ConfigError

if TYPE_CHECKING:
    from mffmoe.engine.base import Engine
    from mffmoe.engine.weights import WeightsSource
    from mffmoe.model.ensemble import MFFMoE
    from mffmoe.model.info import CheckpointInfo

    Weights = WeightsSource | MFFMoE

EngineFactory = Callable[..., "Engine"]
#: A lean one-shot job this small runs on the lean torch engine under `auto` when no graphs are prepared
#: (and none are to be built): it starts at once and holds the least memory of the torch engines.
LEAN_JOB_IMAGES = 16


def _torch(model: Weights, info: CheckpointInfo, device: str = "auto", **options: Any) -> Engine:
    from mffmoe.engine.torch_engine import TorchEngine
    from mffmoe.engine.weights import as_source

    _fp32_only("torch", options)
    return TorchEngine(as_source(model, info).model(), device=device, files=list(info.files.values()), **options)


def _fp32_only(name: str, options: dict[str, Any]) -> None:
    """`precision` other than fp32 asked of an engine that only runs fp32: a clear error, not ignored."""
    precision = options.pop("precision", "fp32")
    if precision != "fp32":
        from mffmoe.engine.precision import check_precision

        check_precision(precision, name)


def _onnxruntime(model: Weights, info: CheckpointInfo, device: str = "auto", **options: Any) -> Engine:
    from mffmoe.engine.onnx_engine import OnnxEngine

    _fp32_only("onnxruntime", options)
    return OnnxEngine(model, info, device=device, **options)


def _openvino(model: Weights, info: CheckpointInfo, device: str = "auto", **options: Any) -> Engine:
    from mffmoe.engine.openvino_engine import OpenVINOEngine
    return OpenVINOEngine(model, info, device=device, **options)


def _auto(model: Weights, info: CheckpointInfo, device: str = "auto", **options: Any) -> Engine:
    """The engine `auto.choose_engine` picks, given only the options it understands; the choice's
    reason is kept on the engine (`auto_reason`). On the CPU, weights whose graphs are not prepared yet
    get them built first (`prepare.ensure_prepared`: once, cached, in a child process), unless
    `build=False` or MFFMOE_BUILD=0."""
    from mffmoe.engine.auto import ACCEPTS, Choice, choose_engine
    from mffmoe.engine.prepare import maybe_prepare

    images = options.pop("images", None)
    build = options.pop("build", None)
    precision = options.get("precision", "fp32")
    if options.get("autocast"):  # only the torch engine does mixed precision (on CUDA)
        choice = Choice("torch", "autocast asked for", ACCEPTS["torch"])
    elif precision != "fp32":  # only OpenVINO runs bf16 / int8 on the CPU
        from mffmoe.engine.precision import check_precision

        check_precision(precision, "openvino")
        maybe_prepare(info, device, build)
        choice = Choice("openvino", f"--precision {precision}: the OpenVINO engine", ACCEPTS["openvino"])
    else:
        problem = maybe_prepare(info, device, build)
        choice = choose_engine(info, device=device, images=images)
        if problem:
            choice.reason = f"{choice.reason} (preparing graphs failed: {problem})"
        if choice.name == "torch" and options.get("lean") and images is not None and images <= LEAN_JOB_IMAGES:
            choice = Choice("torch", f"{choice.reason}; small one-shot job ({images} image(s)): lean torch",
                            ACCEPTS["torch"])
    accepted = {k: v for k, v in options.items() if k in choice.accepts}
    engine = ENGINES[choice.name](model, info, device=device, **accepted)
    engine.auto_reason = choice.reason
    return engine


ENGINES: dict[str, EngineFactory] = {
    "torch": _torch,
    "onnxruntime": _onnxruntime,
    "openvino": _openvino,
    "auto": _auto,
}
#: Other spellings accepted for the names above.
ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "ov": "openvino"}


def one_shot_options(name: str) -> dict[str, Any]:
    """Engine options for a job that runs its inputs and ends (`mffmoe analyze`, scans), not a server: the
    OpenVINO engine then holds one expert at a time (`resident=False`; the options `auto` passes on)."""
    return {"resident": False} if ALIASES.get(name, name) in ("openvino", "auto") else {}


def create_engine(name: str, model: Weights, info: CheckpointInfo, device: str = "auto", **options: Any) -> Engine:
    """The engine `name` (or an alias of it) for `model` (a model, or a `WeightsSource`); `options` go to
    its constructor."""
    try:
        factory = ENGINES[ALIASES.get(name, name)]
    except KeyError:
        raise ConfigError(f"unknown engine {name!r}; choose from {sorted(ENGINES)}") from None
    return factory(model, info, device=device, **options)
