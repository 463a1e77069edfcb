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

`resident=False` (one-shot jobs: `mffmoe analyze`, scans) keeps no expert compiled between calls: each
expert is compiled from its cached blob for a call (0.1-0.4 s each, 1.5 s for the roster: what loading
costs anyway), runs the whole batch, and is freed. The process then holds one expert at a time (about
0.5 GB peak for the full roster instead of 1.1-1.4 GB) and callers hand it large batches
(`min_useful_batch`) so the compiling is paid once per batch, not per image.

A resident engine can also run `lighter()` for a call that needs room of its own (a video, faces mode):
its cheapest experts are then compiled per call, one at a time, until `hold_all()`.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mffmoe.engine import reduced
from mffmoe.engine.exported_engine import ExportedEngine
from mffmoe.engine.memory import (
    drop_clean_library_pages,
    drop_file_pages,
    dropping,
    return_large_blocks_to_os,
    trim_heap,
)
from mffmoe.engine.precision import check_precision, openvino_config
from mffmoe.engine.weights import WeightsSource
from mffmoe.model.info import CheckpointInfo

if TYPE_CHECKING:
    from mffmoe.model.ensemble import MFFMoE


#: Images per call at least when experts are compiled per call (`resident=False`): 1.5 s of compiling shared
#: by 32 images (3 MB of input each) is 5% of their time.
STREAMED_BATCH = 32
#: Experts compiled per call inside `lighter()`: the three cheapest (in the default roster the B4 pair and a
#: B5: 320 MB held, 0.1-0.12 s each to compile; measured, docs/performance.md).
LIGHTER_EXPERTS = 3
#: Path parts of OpenVINO's shared libraries (their clean pages are dropped once the experts are compiled).
OPENVINO_LIBRARIES = ("/openvino/libs/",)


class OpenVINOEngine(ExportedEngine):
    name = "openvino"
    runtime_module = "openvino"
    format = "openvino"
    #: images run one at a time (static [1, 3, S, S] graphs): 4 keeps decoding ahead of the engine while
    #: holding 8 decoded frames instead of 32 (about 100 MB less for a 1080p video at batch 16)
    max_useful_batch: int | None = 4

    def __init__(self, model: WeightsSource | MFFMoE, info: CheckpointInfo, device: str = "auto",
                 workers: int | None = None, cache_compiled: bool = True, release: bool = True,
                 precision: str = "fp32", resident: bool = True, lighter_experts: int = LIGHTER_EXPERTS) -> None:
        #: fp32 (exact, default), or bf16 / int8 (opt-in; `engine.precision`): refused where unsupported
        self.precision = check_precision(precision, "openvino")
        #: the measured difference of a reduced precision from fp32 on a fixed image set (None for fp32)
        self.agreement: dict[str, Any] | None = None
        self.cache_compiled = cache_compiled
        #: release each expert's activation buffers after its run (see the module docstring)
        self.release = release
        #: keep every expert compiled (a server, a library caller), or compile each for its run (module docstring)
        self.resident = resident
        #: how many experts `lighter` compiles per call, the cheapest first
        self.lighter_experts = max(0, int(lighter_experts))
        #: resident experts compiled per call for now (`lighter`), and the blocks asking for that
        self._streamed: frozenset[int] = frozenset()
        self._lighter_users = 0
        self._lighter_lock = threading.Lock()
        if not resident:
            self.max_useful_batch, self.min_useful_batch = None, STREAMED_BATCH
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
        self.core = self.runtime.Core()
        self._compiled_dir = self.artifacts / "compiled"
        if self.cache_compiled:
            self.core.set_property({"CACHE_DIR": str(self._compiled_dir)})
        self.graphs = [str(self.artifacts / f) for f in files if f.endswith(".xml")]
        self.compiled: list[Any] = []
        self.requests: list[Any] = []
        if self.release and self.workers == 1:
            # Large blocks from their own mappings, returned when freed: the released activation buffers
            # (and, not resident, each expert's weights) then leave the process; glibc would keep them.
            return_large_blocks_to_os()
        if self.resident:
            self._compile_all()
        if self.precision != "fp32":
            self.agreement = reduced.measured_agreement(self.precision, self.predict, self.input_size,
                                                        self.fp32_artifacts, fp32_files, self._config())

    def _compile(self, i: int) -> Any:
        """Expert `i` compiled from its file path: OpenVINO finds the compiled blob in CACHE_DIR without
        reading the IR. The blob's pages are dropped once it is compiled; beside resident experts, where
        memory is tight, also while it is read (`memory.dropping`: B6 peaks at +220 MB instead of +340,
        for about 20% more compiling time, so not for an engine that compiles every expert per call and
        holds only one)."""
        files = self._read_files()
        with dropping(files) if self.resident else contextlib.nullcontext():
            compiled = self.core.compile_model(self.graphs[i], "CPU", self._config())
        drop_file_pages(files)
        return compiled

    def _compile_all(self) -> None:
        compiled: dict[int, Any] = {}
        # Largest first: compiling maps the expert's blob in beside the weights already held, so the
        # load's peak is lowest when the biggest blob comes while little is held yet.
        for i in sorted(range(len(self.graphs)), key=lambda i: -self.costs[i]):
            compiled[i] = self._compile(i)
        self.compiled = [compiled[i] for i in range(len(self.graphs))]
        self.requests = [c.create_infer_request() for c in self.compiled]
        self._mapped = self._read_files()
        if self.release and self.workers == 1:
            # OpenVINO's libraries: compiling touched far more of their pages than inference runs
            drop_clean_library_pages(OPENVINO_LIBRARIES)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "precision": self.precision, "agreement_with_fp32": self.agreement,
                "resident": self.resident}

    def _read_files(self) -> list[Path]:
        """The files compiling maps in (IR weights, cached blobs): pages the compiled models read little."""
        blobs = list(self._compiled_dir.glob("*.blob")) if self._compiled_dir.is_dir() else []
        return [*self.artifacts.glob("*.bin"), *blobs]

    @contextlib.contextmanager
    def lighter(self) -> Iterator[None]:
        """Resident experts: the `lighter_experts` cheapest are compiled per call (as `resident=False` does)
        from the block on. Only one of them is held at a time, and none while face detection runs
        (`_util.activations`): in the default roster about 180 MB more room for the whole block and 320 MB
        while detecting, for about 0.1 s a call and expert. They stay that way after the block, so a run
        of videos or faces-mode calls pays for the switch once; `hold_all` compiles them to stay again
        (about 0.3 s)."""
        if not self.resident or self.workers != 1 or not 0 < self.lighter_experts < len(self.graphs):
            yield
            return
        with self._lighter_lock:
            self._lighter_users += 1
            if not self._streamed:
                cheapest = sorted(range(len(self.graphs)), key=lambda i: self.costs[i])[:self.lighter_experts]
                with self._scheduler.lock:  # no expert runs while the set changes
                    self._streamed = frozenset(cheapest)
                    for i in cheapest:
                        self.compiled[i] = self.requests[i] = None
                trim_heap()
        try:
            yield
        finally:
            with self._lighter_lock:
                self._lighter_users -= 1

    @property
    def light(self) -> bool:
        return bool(self._streamed)

    def hold_all(self) -> None:
        """The experts `lighter` let go of, compiled to stay again (unless a `lighter` block is running)."""
        with self._lighter_lock:
            if self._lighter_users or not self._streamed:
                return
            with self._scheduler.lock:
                for i in sorted(self._streamed):
                    self.compiled[i] = self._compile(i)
                    self.requests[i] = self.compiled[i].create_infer_request()
                self._streamed = frozenset()

    def _run_expert(self, i: int, x: np.ndarray) -> np.ndarray:
        if not self.resident or i in self._streamed:  # compiled for this call and freed after it
            compiled = self._compile(i)
            return self._run(compiled, compiled.create_infer_request(), x, release=False)
        out = self._run(self.compiled[i], self.requests[i], x, release=self.release and self.workers == 1)
        if self.release:
            # the few constants the compiled expert reads from its blob in place (about 5 MB an expert)
            # come back from the page cache next time; dropped here, they never add up over the roster
            drop_file_pages(self._mapped)
        return out

    def _run(self, compiled: Any, request: Any, x: np.ndarray, release: bool) -> np.ndarray:
        out = np.empty(len(x), dtype=np.float64)
        for j in range(len(x)):
            # Hand the request a tensor that shares the image rather than letting `infer({0: x})` fill the
            # request's own tensor from Python: done from two threads at once, that path deadlocks.
            request.set_input_tensor(self.runtime.Tensor(x[j:j + 1], shared_memory=True))
            request.start_async()  # `infer()` keeps the GIL for the whole run; start + wait lets experts overlap
            request.wait()
            out[j] = float(request.get_output_tensor(0).data.reshape(-1)[0])
        if release:
            compiled.release_memory()
        return out
