"""Exponential moving average of parameters, as the experts were trained with.

Same semantics and `state_dict` format as the upstream helper (torch_ema), minus its defect: shadows
live on the parameters' own device, so it works without a GPU.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from mffmoe.config import EMA_DECAY


class ExponentialMovingAverage:
    def __init__(self, parameters: Iterable[torch.Tensor], decay: float = EMA_DECAY,
                 use_num_updates: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError("decay must be in [0, 1]")
        self.decay = decay
        self.num_updates: int | None = 0 if use_num_updates else None
        params = list(parameters)
        self._params = params
        self.shadow_params = [p.detach().clone() for p in params]
        self.collected_params: list[torch.Tensor] | None = None

    def _get_parameters(self, parameters: Iterable[torch.Tensor] | None) -> list[torch.Tensor]:
        if parameters is None:
            return self._params
        params = list(parameters)
        if len(params) != len(self.shadow_params):
            raise ValueError(f"expected {len(self.shadow_params)} parameters, got {len(params)}")
        return params

    def current_decay(self) -> float:
        """The decay the next `update` will use (without advancing the counter)."""
        if self.num_updates is None:
            return self.decay
        n = self.num_updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, parameters: Iterable[torch.Tensor] | None = None) -> None:
        params = self._get_parameters(parameters)
        decay = self.current_decay()
        if self.num_updates is not None:
            self.num_updates += 1
        one_minus_decay = 1.0 - decay
        for s, p in zip(self.shadow_params, params, strict=True):
            tmp = s - p.to(s.device, s.dtype)
            tmp.mul_(one_minus_decay)
            s.sub_(tmp)

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[torch.Tensor] | None = None) -> None:
        for s, p in zip(self.shadow_params, self._get_parameters(parameters), strict=True):
            p.data.copy_(s.data)

    def store(self, parameters: Iterable[torch.Tensor] | None = None) -> None:
        self.collected_params = [p.detach().clone() for p in self._get_parameters(parameters)]

    @torch.no_grad()
    def restore(self, parameters: Iterable[torch.Tensor] | None = None) -> None:
        if self.collected_params is None:
            raise RuntimeError("restore() called without a preceding store()")
        for c, p in zip(self.collected_params, self._get_parameters(parameters), strict=True):
            p.data.copy_(c.data)

    @contextlib.contextmanager
    def average_parameters(self, parameters: Iterable[torch.Tensor] | None = None) -> Iterator[None]:
        """Temporarily swap the shadows in. Training/evaluation only: inference folds them once."""
        params = self._get_parameters(parameters)
        self.store(params)
        self.copy_to(params)
        try:
            yield
        finally:
            self.restore(params)

    def to(self, device: Any = None, dtype: Any = None) -> ExponentialMovingAverage:
        self.shadow_params = [s.to(device=device, dtype=dtype if s.is_floating_point() else None)
                              for s in self.shadow_params]
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow_params": self.shadow_params,
            "collected_params": self.collected_params,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = validate_ema_state(state_dict, [tuple(s.shape) for s in self.shadow_params])
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        self.shadow_params = [s.to(device=p.device, dtype=p.dtype).clone()
                              for s, p in zip(state["shadow_params"], self.shadow_params, strict=True)]
        collected = state.get("collected_params")
        self.collected_params = None if collected is None else [
            c.to(device=p.device, dtype=p.dtype).clone() for c, p in zip(collected, self.shadow_params, strict=True)]


def validate_ema_state(state: Any, shapes: list[tuple[int, ...]], where: str = "EMA state") -> dict[str, Any]:
    """Check an upstream EMA dict against the expected parameter shapes; raise ValueError naming the fault."""
    if not isinstance(state, dict):
        raise ValueError(f"{where}: expected a dict, got {type(state).__name__}")
    missing = {"decay", "shadow_params"} - set(state)
    if missing:
        raise ValueError(f"{where}: missing field(s) {sorted(missing)}")
    decay = state["decay"]
    if not isinstance(decay, (int, float)) or not 0.0 <= float(decay) <= 1.0:
        raise ValueError(f"{where}: decay must be a float in [0, 1], got {decay!r}")
    num_updates = state.get("num_updates")
    if num_updates is not None and not isinstance(num_updates, int):
        raise ValueError(f"{where}: num_updates must be an int or None, got {num_updates!r}")
    shadows = state["shadow_params"]
    if not isinstance(shadows, (list, tuple)):
        raise ValueError(f"{where}: shadow_params must be a list of tensors")
    if len(shadows) != len(shapes):
        raise ValueError(f"{where}: shadow_params has {len(shadows)} tensors, the expert has "
                         f"{len(shapes)} parameters")
    for i, (s, shape) in enumerate(zip(shadows, shapes, strict=True)):
        if not isinstance(s, torch.Tensor):
            raise ValueError(f"{where}: shadow_params[{i}] is not a tensor")
        if tuple(s.shape) != tuple(shape):
            raise ValueError(f"{where}: shadow_params[{i}] has shape {tuple(s.shape)}, expected {tuple(shape)}")
    collected = state.get("collected_params")
    if collected is not None and (not isinstance(collected, (list, tuple)) or len(collected) != len(shapes)):
        raise ValueError(f"{where}: collected_params must be None or a list of {len(shapes)} tensors")
    return {"decay": float(decay), "num_updates": num_updates, "shadow_params": list(shadows),
            "collected_params": None if collected is None else list(collected)}
