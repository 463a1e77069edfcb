"""Writing the record `--engine auto` decides from (`auto.py`): run by `mffmoe export` and `prepare.py`.

Per engine: agreement with the torch engine on a fixed input (max |P(fake) difference| over experts),
load time (of a load after the first, which fills the compiled-graph caches) and batch-1 latency on this
machine, stored next to the cached artefacts under the weights' fingerprint. Kept apart from `auto.py`
so that choosing (which the registry imports) does not depend on creating engines by name (which needs
the registry). Also run when `auto` prepares graphs on first use (`prepare.py`).
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mffmoe.engine.auto import RECORD, RECORD_VERSION, TOLERANCE, exported, installed, machine
from mffmoe.engine.cache import writable_root, write_json
from mffmoe.engine.registry import create_engine
from mffmoe.media.samples import sample_batch
from mffmoe.model.checkpoint import CheckpointInfo
from mffmoe.model.ensemble import MFFMoE

#: How many natural-looking images (`media.samples`) an engine must agree with torch on.
PROBE_IMAGES = 4


def _probe_input(input_size: int, n: int = PROBE_IMAGES, seed: int = 0) -> np.ndarray:
    """Sample images through the spec's preprocessing. Not noise: on weights whose BatchNorm statistics
    come from natural images, noise drives activations far out of range, where exact engines "disagree"
    by up to 1.0 while they agree to the last digit on real images."""
    return sample_batch(n, input_size, seed=seed)


def calibrate(model: MFFMoE, info: CheckpointInfo, engines: Sequence[str] = ("torch", "onnxruntime", "openvino"),
              repeats: int = 2, log: Callable[[str], object] = print,
              options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Measure agreement (vs torch, per expert, on PROBE_IMAGES natural-looking images) and batch-1
    latency/load time of each engine, and store the record next to the artefacts. Engines missing or not
    exported are skipped. `options` (per engine name) go to the engines measured, and the record says
    them: `{"torch": {"lean": True}}` keeps the torch model's weights as mapped, so the measurement does
    not copy them (first-use preparation)."""
    options = options or {}
    x = _probe_input(info.input_size)
    results: dict[str, Any] = {}
    reference: np.ndarray | None = None
    for name in ["torch", *[e for e in engines if e != "torch"]]:
        if not installed(name) or not exported(name, info):
            continue
        opts = dict(options.get(name, {}))
        if name != "torch":  # the first load compiles and fills OpenVINO's cache: time a later one, as users get
            create_engine(name, model, info, device="cpu", **opts).close()
            gc.collect()
        t0 = time.perf_counter()
        engine = create_engine(name, model, info, device="cpu", **opts)
        load_s = time.perf_counter() - t0
        probs = engine.predict(x)
        one = x[:1]
        engine.predict(one)  # warm-up at batch 1
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            engine.predict(one)
            times.append(time.perf_counter() - t0)
        if reference is None:
            reference = probs
        per_expert = np.max(np.abs(probs - reference), axis=0)
        diff = float(per_expert.max())
        results[name] = {"ok": diff <= TOLERANCE, "max_abs_diff": diff,
                         "max_abs_diff_per_expert": dict(zip(info.roster, map(float, per_expert), strict=True)),
                         "load_s": round(load_s, 3), "latency_s": round(min(times), 4),
                         **({"options": opts} if opts else {})}
        log(f"{name}: latency {min(times):.3f} s, load {load_s:.2f} s, max |diff| vs torch {diff:.2e}")
        engine.close()
        del engine
        gc.collect()
    record = {"version": RECORD_VERSION, "fingerprint": info.fingerprint(), "machine": machine(),
              "tolerance": TOLERANCE, "engines": results, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if info.files:
        write_json(writable_root(info) / RECORD, record)
    return record
