"""OpenVINO engine: one compiled model per expert from the cached IR (`export.py`).

fp32 is forced (`INFERENCE_PRECISION_HINT=f32`): on CPUs with AVX512-BF16 or AMX, OpenVINO would
otherwise silently run in bf16, which breaks the 1e-4 agreement. Compiled blobs are cached in the
artefact directory (`CACHE_DIR`), so later start-ups skip most of the compilation.

Memory (full roster, measured; docs/performance.md): the compiled experts hold their weights, re-laid
out, in about 0.9 GB of their own memory. Two things would add about as much again, and are avoided:
the pages of the cached blobs each compiled model was read from (dropped after compiling: the compiled
model never reads them again), and each expert's activation buffers, which OpenVINO keeps per compiled
model (about 50 MB each): released after every expert's run (`CompiledModel.release_memory`), with large
blocks returned to the OS when freed (`memory.return_large_blocks_to_os`; glibc's heap would grow with
every image otherwise). Measured cost: each expert's buffers are faulted in afresh; `release=False` keeps
them (faster, about 370 MB more; docs/performance.md).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mffmoe.engine import reduced
from mffmoe.engine.exported_engine import ExportedEngine
from mffmoe.engine.memory import drop_clean_library_pages, drop_file_pages, return_large_blocks_to_os
from mffmoe.engine.precision import check_precision, openvino_config
from mffmoe.engine.weights import WeightsSource
from mffmoe.model.info import CheckpointInfo

if TYPE_CHECKING:
    from mffmoe.model.ensemble import MFFMoE


#: Path parts of OpenVINO's shared libraries (their clean pages are dropped once the experts are compiled).
OPENVINO_LIBRARIES = ("/openvino/libs/",)


class OpenVINOEngine(ExportedEngine):
    name = "openvino"
    runtime_module = "openvino"
    format = "openvino"
    #: images run one at a time (static [1, 3, S, S] graphs): 4 keeps decoding ahead of the engine while
    #: holding 8 decoded frames instead of 32 (about 100 MB less for a 1080p video at batch 16)
    max_useful_batch = 4

    def __init__(self, model: WeightsSource | MFFMoE, info: CheckpointInfo, device: str = "auto",
                 workers: int | None = None, cache_compiled: bool = True, release: bool = True,
                 precision: str = "fp32") -> None:
        #: fp32 (exact, default), or bf16 / int8 (opt-in; `engine.precision`): refused where unsupported
        self.precision = check_precision(precision, "openvino")
        #: the measured difference of a reduced precision from fp32 on a fixed image set (None for fp32)
        self.agreement: dict[str, Any] | None = None
        self.cache_compiled = cache_compiled
        #: release each expert's activation buffers after its run (see the module docstring)
        self.release = release
        # Experts one after another, each on all cores: at batch 1 this measured faster than two experts
        # side by side on one core each (OpenVINO's kernels scale well; docs/performance.md), and it holds
        # one expert's activations at a time. `workers=2` restores the side-by-side plan.
        super().__init__(model, info, device=device, workers=1 if workers is None else workers)

    def _config(self) -> dict[str, Any]:
        return {"PERFORMANCE_HINT": "LATENCY", **openvino_config(self.precision),
                "INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1,
                "ENABLE_CPU_PINNING": False}  # pinned streams of different models would share one core

    def _load(self, files: list[str]) -> None:
        self.fp32_artifacts, fp32_files = self.artifacts, files
        if self.precision == "int8":  # the int8 graphs, quantised from these on first use
            self.artifacts, files = reduced.int8_graphs(self.artifacts, files, self.input_size)
        ov = self.runtime
        core = ov.Core()
        compiled_dir = self.artifacts / "compiled"
        if self.cache_compiled:
            core.set_property({"CACHE_DIR": str(compiled_dir)})
        graphs = [f for f in files if f.endswith(".xml")]
        compiled: dict[int, Any] = {}
        # Largest first: compiling maps the expert's blob in beside the weights already held, so the
        # load's peak is lowest when the biggest blob comes while little is held yet.
        for i in sorted(range(len(graphs)), key=lambda i: -self.costs[i]):
            # From the file path: OpenVINO finds its compiled blob in CACHE_DIR without reading the IR.
            compiled[i] = core.compile_model(str(self.artifacts / graphs[i]), "CPU", self._config())
            drop_file_pages(self._read_files(compiled_dir))
        self.compiled = [compiled[i] for i in range(len(graphs))]
        self.requests = [c.create_infer_request() for c in self.compiled]
        self._mapped = self._read_files(compiled_dir)
        if self.precision != "fp32":
            self.agreement = reduced.measured_agreement(self.precision, self.predict, self.input_size,
                                                        self.fp32_artifacts, fp32_files, self._config())
        if self.release and self.workers == 1:
            # Large blocks from their own mappings, returned when freed: the released activation buffers
            # then leave the process (glibc would otherwise keep them, and its heap grows with every image).
            return_large_blocks_to_os()
            # OpenVINO's libraries: compiling touched far more of their pages than inference runs
            drop_clean_library_pages(OPENVINO_LIBRARIES)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "precision": self.precision, "agreement_with_fp32": self.agreement}

    def predict_experts(self, batch: np.ndarray, experts: Sequence[int]) -> np.ndarray:
        out = super().predict_experts(batch, experts)
        if self.release:
            # the few constants the compiled experts read from their blobs in place come back from the
            # page cache next time (about 35 MB, otherwise resident for good)
            drop_file_pages(self._mapped)
        return out

    def _read_files(self, compiled_dir: Path) -> list[Path]:
        """The files compiling maps in (IR weights, cached blobs): pages the compiled models read little."""
        blobs = list(compiled_dir.glob("*.blob")) if compiled_dir.is_dir() else []
        return [*self.artifacts.glob("*.bin"), *blobs]

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
        if self.release and self.workers == 1:
            self.compiled[i].release_memory()
        return out
