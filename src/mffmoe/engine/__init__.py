"""Inference engines, created by name from a registry."""
from __future__ import annotations

from typing import Callable

from mffmoe.engine.base import Engine
from mffmoe.engine.torch_engine import TorchEngine, resolve_device
from mffmoe.model.checkpoint import CheckpointInfo
from mffmoe.model.ensemble import MFFMoE

EngineFactory = Callable[..., Engine]
ENGINES: dict[str, EngineFactory] = {
    "torch": lambda model, info, device="auto", **kw: TorchEngine(model, device=device, **kw),
}


def create_engine(name: str, model: MFFMoE, info: CheckpointInfo, device: str = "auto", **kwargs) -> Engine:
    try:
        factory = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose from {sorted(ENGINES)}") from None
    return factory(model, info, device=device, **kwargs)


__all__ = ["ENGINES", "Engine", "TorchEngine", "create_engine", "resolve_device"]
