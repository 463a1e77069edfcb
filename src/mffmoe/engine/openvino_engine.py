"""OpenVINO engine: one compiled model per expert from the cached IR (`export.py`).

fp32 is forced (`INFERENCE_PRECISION_HINT=f32`): on CPUs with AVX512-BF16 or AMX, OpenVINO would
otherwise silently run in bf16, which breaks the 1e-4 agreement. Compiled blobs are cached in the
artefact directory (`CACHE_DIR`), so later start-ups skip most of the compilation.
"""
from __future__ import annotations

import numpy as np

from mffmoe.engine.export import ensure_openvino
from mffmoe.engine.exported_engine import ExportedEngine
from mffmoe.model.checkpoint import CheckpointInfo
from mffmoe.model.ensemble import MFFMoE


class OpenVINOEngine(ExportedEngine):
    name = "openvino"
    runtime_module = "openvino"

    def __init__(self, model: MFFMoE, info: CheckpointInfo, device: str = "auto", workers: int | None = None,
                 cache_compiled: bool = True) -> None:
        self.cache_compiled = cache_compiled
        # Experts one after another, each on all cores: at batch 1 this measured faster than two experts
        # side by side on one core each (OpenVINO's kernels scale well; docs/performance.md), and it holds
        # one expert's activations at a time. `workers=2` restores the side-by-side plan.
        super().__init__(model, info, ensure_openvino, device=device, workers=1 if workers is None else workers)

    def _load(self, files: list[str]) -> None:
        ov = self.runtime
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                  "INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1,
                  "ENABLE_CPU_PINNING": False}  # pinned streams of different models would share one core
        core = ov.Core()
        if self.cache_compiled:
            core.set_property({"CACHE_DIR": str(self.artifacts / "compiled")})
        self.compiled = []
        for f in files:
            if f.endswith(".xml"):
                # Compiled for a static [1, 3, S, S] input: measured faster than the dynamic-batch graph,
                # and larger batches gain nothing per image on a small CPU (docs/performance.md), so a
                # batch runs image by image, with one image's activations in memory instead of sixteen.
                graph = core.read_model(str(self.artifacts / f))
                graph.reshape([1, 3, self.input_size, self.input_size])
                self.compiled.append(core.compile_model(graph, "CPU", config))
        self.requests = [c.create_infer_request() for c in self.compiled]

    def _run_expert(self, i: int, x: np.ndarray) -> np.ndarray:
        request = self.requests[i]
        out = np.empty(len(x), dtype=np.float64)
        for j in range(len(x)):
            # Hand the request a tensor that shares the image rather than letting `infer({0: x})` fill the
            # request's own tensor from Python: done from two threads at once, that path deadlocks.
            request.set_input_tensor(self.runtime.Tensor(x[j:j + 1], shared_memory=True))
            request.start_async()  # `infer()` keeps the GIL for the whole run; start + wait lets experts overlap
            request.wait()
            out[j] = float(request.get_output_tensor(0).data.reshape(-1)[0])
        return out
