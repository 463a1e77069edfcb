"""PyTorch engine: the EMA-folded model, eval + inference mode, one lock per forward."""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import torch

from mffmoe.model.ensemble import MFFMoE


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but CUDA is not available on this machine")
    return dev


class TorchEngine:
    name = "torch"

    def __init__(self, model: MFFMoE, device: str = "auto", channels_last: bool = True,
                 autocast: str | None = None) -> None:
        self.torch_device = resolve_device(device)
        self.device = str(self.torch_device)
        self.model = model.eval().requires_grad_(False).to(self.torch_device)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.roster = model.roster
        self.input_size = model.input_size
        # fp16/bf16 autocast only on CUDA, only when asked for: fp32 is the exact path.
        self.autocast = autocast if self.torch_device.type == "cuda" else None
        self._lock = threading.Lock()  # intra-op threads already use every core; serialise forwards

    def _run(self, batch: torch.Tensor, experts: Sequence[int]) -> np.ndarray:
        x = batch.to(self.torch_device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._lock, torch.inference_mode():
            if self.autocast:
                dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[self.autocast]
                with torch.autocast("cuda", dtype=dtype):
                    cols = [self.model.experts[i].probability(x).float() for i in experts]
            else:
                cols = [self.model.experts[i].probability(x) for i in experts]
        return torch.stack(cols, dim=1).double().cpu().numpy()

    def predict(self, batch: torch.Tensor) -> np.ndarray:
        return self._run(batch, range(len(self.roster)))

    def predict_experts(self, batch: torch.Tensor, experts: Sequence[int]) -> np.ndarray:
        return self._run(batch, experts)
