"""Engines by name: `create_engine("torch" | "onnxruntime" | "openvino" | "auto", model, info, ...)`.

Import-light on purpose: each factory imports its engine (and the torch/timm stack behind it) on first
use, so that naming engines (the CLI's `--engine` choices) costs nothing.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mffmoe.errors import ConfigError

if TYPE_CHECKING:
    from mffmoe.engine.base import Engine
    from mffmoe.model.checkpoint import CheckpointInfo
    from mffmoe.model.ensemble import MFFMoE

EngineFactory = Callable[..., "Engine"]
#: A lean one-shot job this small runs on the lean torch engine under `auto` (one batch): the exported
#: engines need seconds to build their sessions and more memory, for little saved per image.
LEAN_JOB_IMAGES = 16


def _torch(model: MFFMoE, info: CheckpointInfo, device: str = "auto", **options: Any) -> Engine:
    from mffmoe.engine.torch_engine import TorchEngine
    return TorchEngine(model, device=device, files=list(info.files.values()), **options)


def _onnxruntime(model: MFFMoE, info: CheckpointInfo, device: str = "auto", **options: Any) -> Engine:
    from mffmoe.engine.onnx_engine import OnnxEngine
    return OnnxEngine(model, info, device=device, **options)


def _openvino(model: MFFMoE, info: CheckpointInfo, device: str = "auto", **options: Any) -> Engine:
    from mffmoe.engine.openvino_engine import OpenVINOEngine
    return OpenVINOEngine(model, info, device=device, **options)


def _auto(model: MFFMoE, info: CheckpointInfo, device: str = "auto", **options: Any) -> Engine:
    """The engine `auto.choose_engine` picks, given only the options it understands; the choice's
    reason is kept on the engine (`auto_reason`)."""
    from mffmoe.engine.auto import ACCEPTS, Choice, choose_engine

    images = options.pop("images", None)
    if options.get("autocast"):  # only the torch engine does mixed precision (on CUDA)
        choice = Choice("torch", "autocast asked for", ACCEPTS["torch"])
    elif options.get("lean") and images is not None and images <= LEAN_JOB_IMAGES:
        choice = Choice("torch", f"small one-shot job ({images} image(s)): lean torch, the least memory and "
                                 f"no graph compilation to wait for", ACCEPTS["torch"])
    else:
        choice = choose_engine(info, device=device, images=images)
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


def create_engine(name: str, model: MFFMoE, info: CheckpointInfo, device: str = "auto", **options: Any) -> Engine:
    """The engine `name` (or an alias of it) for `model`; `options` go to its constructor."""
    try:
        factory = ENGINES[ALIASES.get(name, name)]
    except KeyError:
        raise ConfigError(f"unknown engine {name!r}; choose from {sorted(ENGINES)}") from None
    return factory(model, info, device=device, **options)
