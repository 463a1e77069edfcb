"""Where inference runs: the torch device asked for, and the cores this process may use.

Shared by the engines, the trainer and scans, so that every part counts cores and picks a device alike.
torch is imported on first use: counting cores must not cost a scan's decode workers an `import torch`.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mffmoe.errors import ConfigError

if TYPE_CHECKING:
    import torch


#: Present on every Linux machine with an NVIDIA driver loaded; without them CUDA cannot be available.
NVIDIA_MARKERS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0")


def wants_cuda(device: str = "auto") -> bool:
    """Whether `device` resolves to CUDA, answered without importing torch where no NVIDIA driver exists
    (a CPU machine then never pays for `import torch` just to learn it has no GPU)."""
    if device == "cpu":
        return False
    if device == "auto" and not any(os.path.exists(m) for m in NVIDIA_MARKERS):
        return False
    return resolve_device(device).type == "cuda"


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` is CUDA when available, else the CPU; asking for CUDA where there is none is a ConfigError."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but CUDA is not available on this machine")
    return dev


def cpu_count() -> int:
    """Cores this process may run on (affinity-aware: a container or `taskset` may allow fewer than the
    machine has, which `os.cpu_count()` does not see)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
