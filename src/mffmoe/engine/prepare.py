"""Graphs prepared on first use, so that the default engine is the fast one without a manual step.

The first time `--engine auto` (the default everywhere) meets weights on a CPU machine without their
OpenVINO graphs, it prepares them: exports each expert (ONNX, then OpenVINO IR), checks agreement with
the torch engine on natural-looking images and times both (`calibrate.py`), and writes the record `auto`
chooses from. Afterwards every process that loads these weights runs the graphs from the cache, without
importing torch at all. How:

- in a child process (`python -m mffmoe.engine.build`, which does the work), so that the process that
  asked keeps none of the torch model's memory: it goes on with the compiled graphs alone;
- under an exclusive lock next to the cache (`prepare.lock`, `fcntl.flock`), so that two processes that
  start at once build once: the second waits, then finds the graphs ready;
- with progress on stderr: what it does and why, the expected time (measured here, see ESTIMATE), each
  step with its elapsed time, and where the cache is;
- opt-out: `--engine torch`, `build=False` in the engine options, or MFFMOE_BUILD=0. Broken weights
  are the same typed error as loading them; any other failure to prepare leaves `auto` on torch, with
  the reason in the engine's `auto_reason` and a warning.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable

from mffmoe import errors
from mffmoe.config import env
from mffmoe.engine.auto import installed, read_record
from mffmoe.engine.cache import find_artifacts, locked, say, writable_root
from mffmoe.engine.device import wants_cuda
from mffmoe.errors import MFFMoEError, WeightsError
from mffmoe.model.info import CheckpointInfo

FORMAT = "openvino"
ENGINES = ("torch", "openvino")
LOCK = "prepare.lock"
#: Expected time: a fixed start (child process, imports, loading the weights) plus seconds per expert at
#: 512 px to export, convert and calibrate, scaled by the input size's area. Measured on the 2-core
#: development machine: 83-120 s for the full roster (7 experts), 16 s for two tiny ones, under load.
ESTIMATE_START = 8.0
ESTIMATE = 13.0
ERROR_TAG = "MFFMOE-ERROR "
log = logging.getLogger(__name__)


def prepared(info: CheckpointInfo) -> bool:
    """The graphs exist and were checked against torch here (agreeing or not: a disagreeing engine is
    recorded once and then never picked, not rebuilt every time)."""
    record = read_record(info)
    return bool(record and FORMAT in record.get("engines", {}) and find_artifacts(info, FORMAT) is not None)


def estimate_seconds(info: CheckpointInfo) -> float:
    return ESTIMATE_START + ESTIMATE * len(info.roster) * (info.input_size / 512) ** 2


def maybe_prepare(info: CheckpointInfo, device: str = "auto", build: bool | None = None) -> str | None:
    """Prepare the graphs for `auto` where that applies (CPU, real weights, not done yet, not opted out).
    Returns why preparing failed (then `auto` stays on torch), None otherwise. Broken weights raise."""
    if build is False or (build is None and not env().build) or not info.files or not installed(FORMAT):
        return None
    if wants_cuda(device) or prepared(info):
        return None
    try:
        ensure_prepared(info)
    except WeightsError:
        raise
    except MFFMoEError as e:
        log.warning("could not prepare the OpenVINO graphs (%s); running the torch engine instead", e)
        return str(e)
    return None


def ensure_prepared(info: CheckpointInfo, progress: Callable[[str], None] = say) -> None:
    """Build and calibrate the graphs for `info` in a child process unless they are ready; safe when
    several processes call it at once. Raises the child's typed error."""
    root = writable_root(info)
    with locked(root / LOCK):
        if prepared(info):
            return
        n = len(info.roster)
        progress(f"first use of these weights here: preparing fast CPU graphs (OpenVINO) for the {n} expert(s), "
                 f"once; expected about {estimate_seconds(info):.0f} s on a 2-core CPU. Cached in {root}. "
                 f"(--engine torch, or MFFMOE_BUILD=0, skips this.)")
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "mffmoe.engine.build", info.source, "--fingerprint", info.fingerprint()]
        if not info.ema:
            cmd.append("--allow-missing-ema")
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert child.stderr is not None
        failure: dict[str, str] | None = None
        tail: list[str] = []
        for line in child.stderr:
            line = line.rstrip("\n")
            if line.startswith(ERROR_TAG):
                failure = json.loads(line[len(ERROR_TAG):])
            elif line.startswith("mffmoe: "):
                progress(f"{line[len('mffmoe: '):]} [{time.perf_counter() - t0:.0f} s]")
            elif line.strip():
                tail = [*tail[-19:], line]
        if child.wait() != 0:
            if failure is not None:
                cls = getattr(errors, failure.get("type", ""), None)
                cls = cls if isinstance(cls, type) and issubclass(cls, MFFMoEError) else MFFMoEError
                raise cls(failure.get("message", "preparing the graphs failed"))
            raise MFFMoEError("preparing the graphs failed (exit status "
                              f"{child.returncode}): " + " | ".join(tail[-5:]))
        progress(f"graphs ready in {time.perf_counter() - t0:.0f} s; later runs load them directly")
