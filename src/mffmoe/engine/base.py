"""The engine interface: a batch of preprocessed images in, per-expert P(fake) out."""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch


class Engine(Protocol):
    name: str
    device: str
    roster: tuple[str, ...]
    input_size: int

    def predict(self, batch: torch.Tensor) -> np.ndarray:
        """[B, 3, S, S] float32 (normalised) -> [B, E] float64 per-expert P(fake)."""
        ...

    def predict_experts(self, batch: torch.Tensor, experts: Sequence[int]) -> np.ndarray:
        """Like `predict` for a subset of experts (columns in the order given)."""
        ...
