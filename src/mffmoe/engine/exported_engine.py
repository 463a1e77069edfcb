"""What the engines running exported graphs (ONNX Runtime, OpenVINO) share: one graph per expert, loaded
from the cached artefacts, run by the expert scheduler on the CPU."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from mffmoe.engine.costs import roster_gflops
from mffmoe.engine.parallel import ExpertScheduler, plan_threads
from mffmoe.errors import CheckpointFormatError, ConfigError
from mffmoe.model.checkpoint import CheckpointInfo
from mffmoe.model.ensemble import MFFMoE


def check_manifest(manifest: dict, info: CheckpointInfo, where: str) -> None:
    """The cached graphs must be for exactly this roster and input size."""
    if tuple(manifest.get("roster", ())) != tuple(info.roster) or manifest.get("input_size") != info.input_size:
        raise CheckpointFormatError(f"{where}: cached export is for roster {manifest.get('roster')} at "
                                    f"{manifest.get('input_size')} px, not {list(info.roster)} at {info.input_size} px")


def as_numpy(batch: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(batch, dtype=np.float32)


class ExportedEngine:
    """Subclasses set `name` and implement `_load(files)` and `_run_expert(i, x) -> [B]`."""

    name = "exported"

    def __init__(self, model: MFFMoE, info: CheckpointInfo, ensure: Callable[..., tuple[Path, dict]],
                 device: str = "auto", workers: int | None = None) -> None:
        if device not in ("auto", "cpu"):
            raise ConfigError(f"the {self.name} engine runs on the CPU here (device={device!r} asked for); "
                             f"use --engine torch for CUDA")
        self.device = "cpu"
        self.roster, self.input_size = tuple(info.roster), info.input_size
        self.artifacts, manifest = ensure(model, info)
        check_manifest(manifest, info, str(self.artifacts))
        self.workers, self.threads = plan_threads(len(self.roster), workers)
        self.parallelism = self.workers
        self._load(manifest["files"])
        self.costs = roster_gflops(self.roster, self.input_size)
        self._scheduler = ExpertScheduler(self._run_expert, self.costs, self.workers)

    def _load(self, files: list[str]) -> None:
        raise NotImplementedError

    def _run_expert(self, i: int, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, batch: torch.Tensor) -> np.ndarray:
        return self._scheduler.run(as_numpy(batch), range(len(self.roster)))

    def predict_experts(self, batch: torch.Tensor, experts: Sequence[int]) -> np.ndarray:
        return self._scheduler.run(as_numpy(batch), experts)

    def describe(self) -> dict:
        return {"engine": self.name, "device": self.device, "workers": self.workers, "threads": self.threads,
                "artifacts": str(self.artifacts)}
