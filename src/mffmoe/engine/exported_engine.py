"""What the engines running exported graphs (ONNX Runtime, OpenVINO) share: one graph per expert, loaded
from the cached artefacts that `export.py` writes, run by the expert scheduler on the CPU.

Torch-free when the graphs are cached: the artefacts are found by the weights' fingerprint
(`cache.find_artifacts`), their manifest carries the experts' costs, and only a missing export loads the
torch model (`WeightsSource.model()`) and imports the exporter.
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mffmoe.engine.base import Engine
from mffmoe.engine.cache import find_artifacts
from mffmoe.engine.extras import import_extra
from mffmoe.engine.scheduler import plan_threads
from mffmoe.engine.weights import WeightsSource, as_source
from mffmoe.errors import CheckpointFormatError, ConfigError
from mffmoe.model.info import CheckpointInfo

if TYPE_CHECKING:
    from mffmoe.model.ensemble import MFFMoE


def check_manifest(manifest: dict[str, Any], info: CheckpointInfo, where: str) -> None:
    """The cached graphs must be for exactly this roster and input size."""
    if tuple(manifest.get("roster", ())) != tuple(info.roster) or manifest.get("input_size") != info.input_size:
        raise CheckpointFormatError(f"{where}: cached export is for roster {manifest.get('roster')} at "
                                    f"{manifest.get('input_size')} px, not {list(info.roster)} at {info.input_size} px")


def as_numpy(batch: Any) -> np.ndarray:
    """A batch as a C-contiguous float32 array (torch tensors from older callers are converted)."""
    if not isinstance(batch, np.ndarray) and hasattr(batch, "numpy"):
        batch = batch.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(batch, dtype=np.float32)


class ExportedEngine(Engine):
    """Subclasses set `name`, `runtime_module` and `format`, and implement `_load(files)` (which may read
    `runtime`, `artifacts`, `threads`, `input_size`) and `_run_expert(i, x) -> [B]` on a float32 batch."""

    #: The Python package that runs the graphs (part of the `engines` extra).
    runtime_module: ClassVar[str]
    #: The artefact format (`export.FORMATS`) this engine runs.
    format: ClassVar[str]

    def __init__(self, weights: WeightsSource | MFFMoE, info: CheckpointInfo, device: str = "auto",
                 workers: int | None = None) -> None:
        if device not in ("auto", "cpu"):
            raise ConfigError(f"the {self.name} engine runs on the CPU here (device={device!r} asked for); "
                              f"use --engine torch for CUDA")
        # imported first: a missing runtime should not cost an export before it is reported
        self.runtime: ModuleType = import_extra(self.runtime_module, f"the {self.name} engine")
        found = find_artifacts(info, self.format)
        if found is None:  # export now: this needs the torch model
            from mffmoe.engine.export import EXPORTERS

            found = EXPORTERS[self.format](as_source(weights, info).model(), info)
        self.artifacts: Path = found[0]
        manifest = found[1]
        check_manifest(manifest, info, str(self.artifacts))
        n_workers, threads = plan_threads(len(info.roster), workers)
        costs = manifest.get("gflops")
        super().__init__(info.roster, info.input_size, "cpu", n_workers, threads,
                         costs=[float(c) for c in costs] if isinstance(costs, list) else None)
        self._load(manifest["files"])

    @abstractmethod
    def _load(self, files: list[str]) -> None:
        """Build one runnable graph per expert from the artefact files listed in the manifest."""

    def _inputs(self, batch: np.ndarray) -> np.ndarray:
        return as_numpy(batch)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "artifacts": str(self.artifacts)}
