"""PyTorch engine: the EMA-folded model (folded once by the loader), eval + inference mode.

CPU: experts run in parallel, one per core (see `scheduler.py`), EfficientNet experts in channels_last
(measured faster on CPU, and a lower activation peak; ConvNeXt is not faster, so it stays NCHW).
`lean=True` keeps memory minimal for one-shot runs: experts run one after another on all cores, and
each layer's weight pages leave memory after use (see `memory.py`).
CUDA: channels_last everywhere, optional fp16/bf16 autocast (`autocast="bf16"`); fp32 stays the exact
path and the default.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import torch

from mffmoe.engine.base import Engine
from mffmoe.engine.device import cpu_count, resolve_device
from mffmoe.engine.memory import (
    WeightPager,
    drop_clean_library_pages,
    return_large_blocks_to_os,
    trim_heap,
)
from mffmoe.engine.scheduler import plan_threads
from mffmoe.errors import ConfigError
from mffmoe.model.ensemble import MFFMoE
from mffmoe.model.experts import Expert

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
#: Images per expert forward on the CPU (not in the lean engine): larger batches run slower there.
CPU_MICRO_BATCH = 1


def _wants_channels_last(name: str, device: torch.device, setting: bool | str) -> bool:
    if setting == "auto":
        return device.type == "cuda" or "efficientnet" in name
    return bool(setting)


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, model: MFFMoE, device: str = "auto", channels_last: bool | str = "auto",
                 autocast: str | None = None, workers: int | None = None, lean: bool = False,
                 files: Iterable[str] = ()) -> None:
        self.torch_device = resolve_device(device)
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
        self.channels_last = [_wants_channels_last(n, self.torch_device, channels_last) for n in model.roster]
        for expert, cl in zip(self.model.experts, self.channels_last, strict=True):
            if cl and not self.lean:
                expert.to(memory_format=torch.channels_last)
        if self.torch_device.type == "cpu":
            n_workers, threads = plan_threads(len(model.roster), 1 if self.lean else workers)
        else:
            n_workers, threads = 1, torch.get_num_threads()
        super().__init__(model.roster, model.input_size, str(self.torch_device), n_workers, threads)
        self._pager: WeightPager | None = None
        if self.lean:
            return_large_blocks_to_os()
            self._pager = WeightPager(self.model, list(files))
            drop_clean_library_pages()  # CPU run: CUDA library pages touched at import are not needed

    def _inputs(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        return batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))

    def _prepare(self, batch: torch.Tensor, channels_last: bool) -> torch.Tensor:
        x = batch.to(self.torch_device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()

    def _run_expert(self, i: int, batch: torch.Tensor) -> np.ndarray:
        if self.torch_device.type == "cpu" and not self.lean and len(batch) > CPU_MICRO_BATCH:
            # measured: 16 frames of a 1080p video, full roster, 2 cores: batch 16 38.1 s, batch 4 38.7 s,
            # batch 1 27.4 s (and 0.9 GB less): two experts' batch-16 activations at 512 px on two cores
            # thrash the caches. The results do not depend on it (each image is computed alone anyway).
            return np.concatenate([self._run_expert(i, part) for part in batch.split(CPU_MICRO_BATCH)])
        x = self._prepare(batch, self.channels_last[i])
        expert = cast(Expert, self.model.experts[i])
        with torch.inference_mode():
            if self.autocast:
                with torch.autocast("cuda", dtype=AUTOCAST_DTYPES[self.autocast]):
                    p = expert.probability(x).float()
            else:
                p = expert.probability(x)
        out = p.double().cpu().numpy()
        if self.lean:
            del x, p
            if self._pager is not None:
                self._pager.release_all()
            trim_heap()
        return out

    @contextmanager
    def _intra_op_threads(self) -> Iterator[None]:
        """torch's intra-op thread count is process-wide: set it for this call only (workers x threads =
        cores), so that the rest of the process (training, other models) keeps its own setting."""
        before = torch.get_num_threads()
        if self.torch_device.type == "cpu" and before != self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    def predict_experts(self, batch: np.ndarray, experts: Sequence[int]) -> np.ndarray:
        with self._intra_op_threads():
            return super().predict_experts(batch, experts)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "lean": self.lean, "autocast": self.autocast, "cores": cpu_count(),
                "channels_last": [n for n, cl in zip(self.roster, self.channels_last, strict=True) if cl]}

    def close(self) -> None:
        super().close()
        if self._pager is not None:
            self._pager.remove()
