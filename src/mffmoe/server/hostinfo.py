"""The machine figures `/stats` carries for the host's monitoring page: device memory and system RAM.

The host's client reads these by name (docs/server.md, "The host contract"); memory figures are
numbers in GiB (rounded to 0.01), percentages numbers in [0, 100]. Read at request time, so they are
live; RAM comes from /proc/meminfo (Linux) and is null where that file does not exist.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from mffmoe.inference.detector import Detector

GIB = 1024 ** 3
MEMINFO = Path("/proc/meminfo")
CPUINFO = Path("/proc/cpuinfo")
#: `/stats` `models_info[].description` of the served model.
DESCRIPTION = "MFF-MoE V1: a mixture of seven timm experts whose EMA weights average P(fake); images and videos"


def _gib(n: float) -> float:
    return round(n / GIB, 2)


def _percent(used: float, total: float) -> float:
    return round(100 * used / total, 1) if total else 0.0


def ram() -> tuple[int, int] | None:
    """(used, total) bytes: total minus MemAvailable, as `free` counts it; None without /proc/meminfo."""
    try:
        lines = MEMINFO.read_text().splitlines()
    except OSError:
        return None
    kib = {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in lines) if v.strip()}
    if "MemTotal" not in kib or "MemAvailable" not in kib:
        return None
    total = kib["MemTotal"] * 1024
    return total - kib["MemAvailable"] * 1024, total


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_info(device: str) -> dict[str, Any]:
    """`device_info` for the torch device the engine runs on: the GPU's own memory for CUDA, the
    system's RAM for the CPU (where the model's memory lives), no figures (null) for another device."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):  # not a torch device name: reported as given, without figures
        dev = None
    kind = dev.type if dev is not None else device
    if dev is not None and dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        return {"type": "cuda", "name": torch.cuda.get_device_name(index), "cuda_version": torch.version.cuda,
                "used_memory": _gib(total - free), "total_memory": _gib(total),
                "memory_usage_percent": _percent(total - free, total)}
    memory = ram() if kind == "cpu" else None
    used, total = memory if memory else (0, 0)
    return {"type": kind, "name": cpu_name() if kind == "cpu" else kind, "cuda_version": None,
            "used_memory": _gib(used) if memory else None, "total_memory": _gib(total) if memory else None,
            "memory_usage_percent": _percent(used, total) if memory else None}


def system_info() -> dict[str, Any]:
    memory = ram()
    used, total = memory if memory else (0, 0)
    return {"platform": platform.platform(), "python_version": platform.python_version(),
            "used_ram": _gib(used) if memory else None, "total_ram": _gib(total) if memory else None,
            "ram_usage_percent": _percent(used, total) if memory else None}


def models_info(detector: Detector) -> list[dict[str, Any]]:
    """The host picks what to run from these entries: `name` is sent back as the `model` field; the
    detector takes images and videos (frames only: no audio, not multimodal)."""
    return [{"name": detector.model_name, "description": DESCRIPTION, "device": detector.engine.device,
             "loaded": True, "isImage": True, "isVideo": True, "isAudio": False, "isMultiModal": False}]
