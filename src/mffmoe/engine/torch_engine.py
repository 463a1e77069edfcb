"""PyTorch engine: the EMA-folded model (folded once by the loader), eval + inference mode.

CPU: experts run in parallel, one per core (see `parallel.py`), EfficientNet experts in channels_last
(measured faster on CPU, and a lower activation peak; ConvNeXt is not faster, so it stays NCHW).
`lean=True` keeps memory minimal for one-shot runs: experts run one after another on all cores, and
each layer's weight pages leave memory after use (see `lean.py`).
CUDA: channels_last everywhere, optional fp16/bf16 autocast (`autocast="bf16"`); fp32 stays the exact
path and the default.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from mffmoe.engine.costs import roster_gflops
from mffmoe.engine.lean import (
    WeightPager,
    drop_clean_library_pages,
    return_large_blocks_to_os,
    trim_heap,
)
from mffmoe.engine.parallel import ExpertScheduler, cpu_count, plan_threads
from mffmoe.errors import ConfigError
from mffmoe.model.ensemble import MFFMoE

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but CUDA is not available on this machine")
    return dev


def _wants_channels_last(name: str, device: torch.device, setting: bool | str) -> bool:
    if setting == "auto":
        return device.type == "cuda" or "efficientnet" in name
    return bool(setting)


class TorchEngine:
    name = "torch"

    def __init__(self, model: MFFMoE, device: str = "auto", channels_last: bool | str = "auto",
                 autocast: str | None = None, workers: int | None = None, lean: bool = False,
                 files: Iterable[str] = ()) -> None:
        self.torch_device = resolve_device(device)
        self.device = str(self.torch_device)
        self.roster = model.roster
        self.input_size = model.input_size
        self.lean = lean and self.torch_device.type == "cpu"
        if autocast is not None and autocast not in AUTOCAST_DTYPES:
            raise ConfigError(f"autocast must be one of {sorted(AUTOCAST_DTYPES)} or None")
        if autocast is not None and self.torch_device.type == "cpu":
            raise ConfigError("--autocast needs CUDA; on the CPU the engine runs exact fp32")
        # fp16/bf16 autocast only on CUDA, only when asked for: fp32 is the exact path.
        self.autocast = autocast if self.torch_device.type == "cuda" else None
        self.model = model.eval().requires_grad_(False).to(self.torch_device)
        # channels_last inputs: oneDNN then runs NHWC directly, without re-laying out every activation
        # (faster, and lower peak memory). Weights are re-laid out once, except in a lean engine, which
        # keeps the file-mapped originals (each layer's weight is then converted on the fly, a small copy).
        self.channels_last = [_wants_channels_last(n, self.torch_device, channels_last) for n in self.roster]
        for expert, cl in zip(self.model.experts, self.channels_last):
            if cl and not self.lean:
                expert.to(memory_format=torch.channels_last)
        self.costs = roster_gflops(self.roster, self.input_size)
        if self.torch_device.type == "cpu":
            n_workers, threads = plan_threads(len(self.roster), 1 if self.lean else workers)
        else:
            n_workers, threads = 1, torch.get_num_threads()
        self.workers, self.threads = n_workers, threads
        self.parallelism = n_workers
        self._pager = None
        if self.lean:
            return_large_blocks_to_os()
            self._pager = WeightPager(self.model, list(files))
            drop_clean_library_pages()  # CPU run: CUDA library pages touched at import are not needed
        self._scheduler = ExpertScheduler(self._run_expert, self.costs, n_workers)

    def _prepare(self, batch: torch.Tensor, channels_last: bool) -> torch.Tensor:
        x = batch.to(self.torch_device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()

    def _run_expert(self, i: int, batch: torch.Tensor) -> np.ndarray:
        x = self._prepare(batch, self.channels_last[i])
        with torch.inference_mode():
            if self.autocast:
                with torch.autocast("cuda", dtype=AUTOCAST_DTYPES[self.autocast]):
                    p = self.model.experts[i].probability(x).float()
            else:
                p = self.model.experts[i].probability(x)
        out = p.double().cpu().numpy()
        if self.lean:
            del x, p
            if self._pager is not None:
                self._pager.release_all()
            trim_heap()
        return out

    def _run(self, batch: torch.Tensor, experts: Sequence[int]) -> np.ndarray:
        # torch's intra-op thread count is process-wide: set it for this call only (workers x threads =
        # cores), so that the rest of the process (training, other models) keeps its own setting.
        before = torch.get_num_threads()
        if self.torch_device.type == "cpu" and before != self.threads:
            torch.set_num_threads(self.threads)
        try:
            return self._scheduler.run(batch, experts)
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    def predict(self, batch: torch.Tensor) -> np.ndarray:
        return self._run(batch, range(len(self.roster)))

    def predict_experts(self, batch: torch.Tensor, experts: Sequence[int]) -> np.ndarray:
        return self._run(batch, experts)

    def describe(self) -> dict:
        return {"engine": self.name, "device": self.device, "workers": self.workers, "threads": self.threads,
                "lean": self.lean, "autocast": self.autocast, "cores": cpu_count(),
                "channels_last": [n for n, cl in zip(self.roster, self.channels_last) if cl]}
