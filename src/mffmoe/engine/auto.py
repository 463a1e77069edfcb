"""`--engine auto`: the fastest engine that is available here and agrees with torch to 1e-4.

How it decides without a costly start-up: it reads a calibration record written next to the cached
artefacts (same `<fingerprint>` key as the weights) by `prepare.py` (on the first use of the weights) or
`mffmoe export`. The record holds, per engine, the measured agreement with the torch engine on natural-
looking images (max |P(fake) difference| over experts), the load time and the batch-1 latency on this
machine. `auto` then picks, among engines that are importable, exported and within 1e-4:

- for a long-running process (library, server: `images=None`): the lowest latency;
- for a one-shot job of `images` images (the CLI passes its count): the lowest `load + images x latency`,
  counting `import torch` for the torch engine in a process that has not imported it.

Without a record, `registry._auto` first has `prepare.py` build one (CPU, real weights; once per weights
and machine, in a child process); opted out of that (MFFMOE_BUILD=0, `build=False`), or on CUDA, auto
is `torch` (a one-shot CLI job of at most 16 images then runs the lean torch engine). A record made on
another machine (shared weights directory) is not trusted for timings; auto then uses the static order
the benchmark gave on our reference machine (`STATIC_PREFERENCE`), still only among engines that passed
the agreement check. The record itself is written by `calibrate.py`.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

from mffmoe.engine.cache import candidate_roots, find_artifacts, read_json
from mffmoe.engine.device import cpu_count, wants_cuda
from mffmoe.model.info import CheckpointInfo

TOLERANCE = 1e-4
RECORD = "calibration.json"
RECORD_VERSION = 1
#: Fastest first, from BENCHMARKS.md (batch-1 latency on the 2-core reference machine).
STATIC_PREFERENCE = ("openvino", "onnxruntime", "torch")
#: Engine options each engine understands (auto passes on only those).
ACCEPTS = {"torch": {"lean", "workers", "channels_last", "autocast"},
           "onnxruntime": {"workers", "optimization"},
           "openvino": {"workers", "cache_compiled", "release", "precision", "resident", "lighter_experts"}}
MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
FORMAT_OF = {"onnxruntime": "onnx", "openvino": "openvino"}


@dataclass
class Choice:
    """An engine name, why it was picked, and the engine options it takes."""

    name: str
    reason: str
    accepts: set[str] = field(default_factory=set)


def machine() -> dict[str, Any]:
    """What a calibration record's timings hold for: CPU model, usable cores, OS, torch version."""
    cpu = ""
    try:  # not platform.processor(): on Linux it forks `uname -p`, a second copy of this large process
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    cpu = cpu or platform.machine()
    return {"cpu": cpu, "cores": cpu_count(), "system": platform.system(), "torch": _torch_version()}


def _torch_version() -> str:
    """torch's version as `torch.__version__` gives it (with its local part), read without importing it."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return ""


#: Seconds `import torch` and timm take before the torch engine can load (measured on the 2-core development
#: machine: 1.7 s for torch, 2.5 s with timm); the exported engines' runtimes import in about 0.1 s.
TORCH_IMPORT_S = 2.5


def import_cost(name: str) -> float:
    """What choosing `name` adds to a one-shot job's start beyond its recorded load time."""
    return TORCH_IMPORT_S if name == "torch" and "torch" not in sys.modules else 0.0


def installed(name: str) -> bool:
    return name == "torch" or importlib.util.find_spec(MODULES[name]) is not None


def exported(name: str, info: CheckpointInfo) -> bool:
    if name == "torch":
        return True
    return find_artifacts(info, FORMAT_OF[name]) is not None


def read_record(info: CheckpointInfo) -> dict[str, Any] | None:
    if not info.files:
        return None
    for root in candidate_roots(info):
        rec = read_json(root / RECORD)
        if rec and rec.get("version") == RECORD_VERSION and rec.get("fingerprint") == info.fingerprint():
            return rec
    return None


def choose_engine(info: CheckpointInfo, device: str = "auto", images: int | None = None) -> Choice:
    def pick(name: str, reason: str) -> Choice:
        return Choice(name, reason, ACCEPTS[name])

    if wants_cuda(device):
        return pick("torch", "CUDA: the torch engine is the GPU engine")
    record = read_record(info)
    if record is None:
        return pick("torch", "no calibration record for these weights (run `mffmoe export --format all` once)")
    good = {name: r for name, r in record.get("engines", {}).items()
            if name in ACCEPTS and r.get("ok") and installed(name) and exported(name, info)}
    if not good:
        return pick("torch", "no calibrated engine passed the 1e-4 agreement check")
    if record.get("machine") != machine():
        name = next(n for n in STATIC_PREFERENCE if n in good or n == "torch")
        return pick(name, "calibrated on another machine: static preference among engines that agree")
    if images is None:
        name = min(good, key=lambda n: good[n]["latency_s"])
        return pick(name, f"lowest calibrated batch-1 latency ({good[name]['latency_s']:.3f} s)")
    cost = {n: r["load_s"] + images * r["latency_s"] + import_cost(n) for n, r in good.items()}
    name = min(cost, key=cost.__getitem__)
    return pick(name, f"lowest load + {images} x latency ({cost[name]:.2f} s expected)")
