"""The experts' last feature stages as OpenVINO graphs, so Grad-CAM costs about one OpenVINO pass.

Grad-CAM needs the last stage's activations and the gradient of the fake log-odds with respect to them.
Only the head (pooling, norm, linear) lies between the two, so the activations can come from anywhere
exact: here from OpenVINO graphs of each expert's `forward_features` (fp32 forced, as the engine), and
captum differentiates the torch head alone on them. The graphs are converted from the torch model on
first use (about 1.5 minutes for the seven experts on 2 cores, once) and kept in the weights' cache
folder (`engine.cache`: next to the weights, else the user cache), keyed by the weights' fingerprint,
with the cell grids measured while converting (`cells.measure_grid`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from mffmoe.engine.cache import StagingDir, candidate_roots, locked, read_json, say, writable_root, write_json
from mffmoe.engine.extras import import_extra
from mffmoe.explain.cells import measure_grid
from mffmoe.explain.placement import CellGrid
from mffmoe.model.ensemble import MFFMoE
from mffmoe.model.experts import Expert
from mffmoe.model.info import CheckpointInfo

FORMAT = "explain-openvino"
VERSION = "1"
MANIFEST = "features.json"


class _Features(nn.Module):
    """An expert's `forward_features` as a module to convert."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)  # type: ignore[operator]


def _find(info: CheckpointInfo) -> tuple[Path, dict[str, Any]] | None:
    for root in candidate_roots(info):
        d = root / FORMAT
        m = read_json(d / MANIFEST)
        if (m and m.get("version") == VERSION and m.get("fingerprint") == info.fingerprint()
                and m.get("input_size") == info.input_size and all((d / f).exists() for f in m.get("files", []))):
            return d, m
    return None


def _build(model: MFFMoE, info: CheckpointInfo) -> tuple[Path, dict[str, Any]]:
    ov = import_extra("openvino", "Grad-CAM on OpenVINO features")
    root = writable_root(info)
    with locked(root / f"{FORMAT}.lock"):
        found = _find(info)
        if found is not None:
            return found
        say(f"preparing the experts' feature graphs for explanations (once for these weights) in {root / FORMAT}")
        staging = StagingDir(root / FORMAT)
        try:
            files, grids = [], []
            x = torch.zeros(1, 3, info.input_size, info.input_size)
            for i, expert in enumerate(model.experts):
                net = cast(Expert, expert).baseline_extractor
                grid = measure_grid(net, x)
                with torch.no_grad():
                    graph = ov.convert_model(_Features(net).eval(), example_input=x)
                name = f"features_{i}.xml"
                ov.save_model(graph, str(staging.path / name), compress_to_fp16=False)
                files += [name, f"features_{i}.bin"]
                grids.append([grid.step, grid.offset])
                say(f"  {i + 1}/{len(model.experts)} {model.roster[i]}")
            write_json(staging.path / MANIFEST, {"version": VERSION, "fingerprint": info.fingerprint(),
                                                 "input_size": info.input_size, "roster": list(model.roster),
                                                 "files": files, "grids": grids})
        except BaseException:
            staging.discard()
            raise
        return staging.commit(), read_json(root / FORMAT / MANIFEST) or {}


class FeatureGraphs:
    """Compiled feature graphs, one per expert: `run(i, batch) -> [N, C, h, w]` float32. Kept compiled
    (`resident`, as a server's engine), or compiled for each run and freed, as a one-shot job's engine
    (`OpenVINOEngine(resident=False)`): seven compiled graphs hold about 1 GB."""

    def __init__(self, model: MFFMoE, info: CheckpointInfo, threads: int, resident: bool = True) -> None:
        ov = import_extra("openvino", "Grad-CAM on OpenVINO features")
        found = _find(info) or _build(model, info)
        directory, manifest = found
        self.grids = [CellGrid(float(s), float(o)) for s, o in manifest["grids"]]
        self.core = ov.Core()
        self.core.set_property({"CACHE_DIR": str(directory / "compiled")})
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                       "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
        self.graphs = [str(directory / f) for f in manifest["files"] if f.endswith(".xml")]
        self.resident = resident
        self.compiled = [self._compile(i) for i in range(len(self.graphs))] if resident else []
        # one request per expert, made once (as the engine): its buffers are reused, not made per call
        self.requests = [c.create_infer_request() for c in self.compiled]

    def _compile(self, i: int) -> Any:
        return self.core.compile_model(self.graphs[i], "CPU", self.config)

    def run(self, i: int, batch: np.ndarray) -> np.ndarray:
        """Expert i's last-stage activations (a copy: the request's buffer is reused by the next call)."""
        request = self.requests[i] if self.resident else self._compile(i).create_infer_request()
        out = request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return np.array(out, dtype=np.float32, copy=True)
