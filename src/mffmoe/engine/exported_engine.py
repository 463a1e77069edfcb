"""What the engines running exported graphs (ONNX Runtime, OpenVINO) share: one graph per expert, loaded
from the cached artefacts that `export.py` writes, run by the expert scheduler on the CPU."""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import torch

from mffmoe.engine.base import Engine
from mffmoe.engine.extras import import_extra
from mffmoe.engine.scheduler import plan_threads
from mffmoe.errors import CheckpointFormatError, ConfigError
from mffmoe.model.checkpoint import CheckpointInfo
from mffmoe.model.ensemble import MFFMoE


def check_manifest(manifest: dict[str, Any], info: CheckpointInfo, where: str) -> None:
    """The cached graphs must be for exactly this roster and input size."""
    if tuple(manifest.get("roster", ())) != tuple(info.roster) or manifest.get("input_size") != info.input_size:
        raise CheckpointFormatError(f"{where}: cached export is for roster {manifest.get('roster')} at "
                                    f"{manifest.get('input_size')} px, not {list(info.roster)} at {info.input_size} px")


def as_numpy(batch: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(batch, dtype=np.float32)


class ExportedEngine(Engine):
    """Subclasses set `name` and `runtime_module`, and implement `_load(files)` (which may read `runtime`,
    `artifacts`, `threads`, `input_size`) and `_run_expert(i, x) -> [B]` on a float32 numpy batch."""

    #: The Python package that runs the graphs (part of the `engines` extra).
    runtime_module: ClassVar[str]

    def __init__(self, model: MFFMoE, info: CheckpointInfo, ensure: Callable[..., tuple[Path, dict[str, Any]]],
                 device: str = "auto", workers: int | None = None) -> None:
        if device not in ("auto", "cpu"):
            raise ConfigError(f"the {self.name} engine runs on the CPU here (device={device!r} asked for); "
                              f"use --engine torch for CUDA")
        # imported first: a missing runtime should not cost an export before it is reported
        self.runtime: ModuleType = import_extra(self.runtime_module, f"the {self.name} engine")
        self.artifacts, manifest = ensure(model, info)
        check_manifest(manifest, info, str(self.artifacts))
        n_workers, threads = plan_threads(len(info.roster), workers)
        super().__init__(info.roster, info.input_size, "cpu", n_workers, threads)
        self._load(manifest["files"])

    @abstractmethod
    def _load(self, files: list[str]) -> None:
        """Build one runnable graph per expert from the artefact files listed in the manifest."""

    def _inputs(self, batch: torch.Tensor) -> np.ndarray:
        return as_numpy(batch)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "artifacts": str(self.artifacts)}
