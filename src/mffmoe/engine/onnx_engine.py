"""ONNX Runtime engine: one session per expert (graphs exported once and cached by `export.py`).

Sessions run on the CPU execution provider with full graph optimisation (Conv+BN+activation fusion,
NCHWc layouts). On a small CPU the experts run in parallel, one core each (`scheduler.py`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mffmoe.engine.exported_engine import ExportedEngine
from mffmoe.engine.weights import WeightsSource
from mffmoe.errors import ConfigError
from mffmoe.model.info import CheckpointInfo

if TYPE_CHECKING:
    from mffmoe.model.ensemble import MFFMoE

OPTIMIZATION = ("all", "extended", "basic")


class OnnxEngine(ExportedEngine):
    name = "onnxruntime"
    runtime_module = "onnxruntime"
    format = "onnx"

    def __init__(self, model: WeightsSource | MFFMoE, info: CheckpointInfo, device: str = "auto",
                 workers: int | None = None, optimization: str = "all") -> None:
        if optimization not in OPTIMIZATION:
            raise ConfigError(f"optimization must be one of {OPTIMIZATION}, not {optimization!r}")
        self.optimization = optimization
        super().__init__(model, info, device=device, workers=workers)

    def _load(self, files: list[str]) -> None:
        ort = self.runtime
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                       "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[self.optimization]
        so.log_severity_level = 3
        # Without the arena each run's buffers are freed when it ends; with it, every one of the seven
        # sessions would keep its own peak (for a 16-frame batch at 512 px, enough to exhaust RAM).
        so.enable_cpu_mem_arena = False
        self.sessions = [ort.InferenceSession(str(self.artifacts / f), so, providers=["CPUExecutionProvider"])
                         for f in files]

    def _run_expert(self, i: int, x: np.ndarray) -> np.ndarray:
        return self.sessions[i].run(["p_fake"], {"input": x})[0]
