"""Inference engines, created by name from a registry (`auto` picks one, see `auto.py`).

Kept import-light on purpose (engines, torch models and timm load on first use): the CLI imports this
package at start-up, and `analyze` must be able to trim imports before timm comes in (see `lean.py`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from mffmoe.errors import ConfigError

if TYPE_CHECKING:
    from mffmoe.engine.base import Engine
    from mffmoe.model.checkpoint import CheckpointInfo
    from mffmoe.model.ensemble import MFFMoE

EngineFactory = Callable[..., "Engine"]
#: A lean one-shot job this small runs on the lean torch engine under `auto` (one batch): the exported
#: engines need seconds to build their sessions and ~1.4 GB, for at most a second saved per image.
LEAN_JOB_IMAGES = 16


def _torch(model: "MFFMoE", info: "CheckpointInfo", device: str = "auto", **kw) -> "Engine":
    from mffmoe.engine.torch_engine import TorchEngine
    return TorchEngine(model, device=device, files=list(info.files.values()), **kw)


def _onnxruntime(model: "MFFMoE", info: "CheckpointInfo", device: str = "auto", **kw) -> "Engine":
    from mffmoe.engine.onnx_engine import OnnxEngine
    return OnnxEngine(model, info, device=device, **kw)


def _openvino(model: "MFFMoE", info: "CheckpointInfo", device: str = "auto", **kw) -> "Engine":
    from mffmoe.engine.openvino_engine import OpenVINOEngine
    return OpenVINOEngine(model, info, device=device, **kw)


def _auto(model: "MFFMoE", info: "CheckpointInfo", device: str = "auto", **kw) -> "Engine":
    from mffmoe.engine.auto import ACCEPTS, Choice, choose_engine
    images = kw.pop("images", None)
    if kw.get("autocast"):  # only the torch engine does mixed precision (on CUDA)
        choice = Choice("torch", "autocast asked for", ACCEPTS["torch"])
    elif kw.get("lean") and images is not None and images <= LEAN_JOB_IMAGES:
        choice = Choice("torch", f"small one-shot job ({images} image(s)): lean torch, the least memory and "
                                 f"no graph compilation to wait for", ACCEPTS["torch"])
    else:
        choice = choose_engine(info, device=device, images=images)
    options = {k: v for k, v in kw.items() if k in choice.accepts}
    engine = ENGINES[choice.name](model, info, device=device, **options)
    engine.auto_reason = choice.reason  # type: ignore[attr-defined]
    return engine


ENGINES: dict[str, EngineFactory] = {
    "torch": _torch,
    "onnxruntime": _onnxruntime,
    "openvino": _openvino,
    "auto": _auto,
}
#: Other spellings accepted for the names above.
ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "ov": "openvino"}


def create_engine(name: str, model: "MFFMoE", info: "CheckpointInfo", device: str = "auto", **kwargs) -> "Engine":
    try:
        factory = ENGINES[ALIASES.get(name, name)]
    except KeyError:
        raise ConfigError(f"unknown engine {name!r}; choose from {sorted(ENGINES)}") from None
    return factory(model, info, device=device, **kwargs)


def __getattr__(name: str) -> Any:  # lazy re-exports
    if name in ("TorchEngine", "resolve_device"):
        from mffmoe.engine import torch_engine
        return getattr(torch_engine, name)
    if name == "Engine":
        from mffmoe.engine.base import Engine
        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ALIASES", "ENGINES", "Engine", "TorchEngine", "create_engine", "resolve_device"]
