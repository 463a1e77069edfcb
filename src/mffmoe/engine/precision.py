"""Opt-in reduced precision for the OpenVINO engine: `fp32` (the default, exact), `bf16` and `int8`.

Torch-free on purpose (numpy, OpenVINO and the standard library at module level): the exported engines
must not need torch to decide or configure a precision. NNCF, which makes the int8 graphs, is imported
only when quantising (it imports torch itself when torch is installed; quantising happens once per
weights, like exporting).

What each precision is, and why:

- `fp32`: what the engines run today, agreeing with torch to 1e-4. Always supported, always the default.
- `bf16`: the fp32 IR compiled with `INFERENCE_PRECISION_HINT=bf16`. Only where the CPU computes bf16
  natively (`avx512_bf16` or `amx_bf16` in /proc/cpuinfo); elsewhere OpenVINO would silently run fp32
  (no gain) or emulate it (slower), so it is refused.
- `int8`: an int8 IR quantised by NNCF (`nncf.quantize`, OpenVINO's own post-training quantiser)
  from the fp32 per-expert IR, calibrated on generated natural-looking images (`media.samples`, through
  the spec's preprocessing). Refused without int8 dot-product instructions (`avx512_vnni`, `avx_vnni`,
  `amx_int8`): without them OpenVINO's int8 kernels multiply through 16-bit saturating sums, which is
  both slower and not what was measured (the graphs are quantised with NNCF's overflow fix disabled,
  i.e. full 8-bit weights, which those kernels can saturate on; NNCF's fix for that narrows weights
  to 7 bits, halving their resolution in every layer). Refusing is the honest answer: the flag promises the
  measured speed and agreement, not just "it runs".

Why NNCF and not onnxruntime's quantiser: NNCF installs from PyPI with pure-Python dependencies (no
torch requirement), works on the IR the engine already has (no second export), and places quantisers
the way OpenVINO's CPU plugin fuses them; docs/performance.md ("Precision") has the measurements.
"""
from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mffmoe.errors import ConfigError, MissingExtraError

PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_PRECISION = "fp32"
#: Engines that can run each precision (only OpenVINO compiles bf16 / runs int8 IRs here).
ENGINE_PRECISIONS: dict[str, tuple[str, ...]] = {"openvino": PRECISIONS, "onnxruntime": ("fp32",),
                                                   "torch": ("fp32",)}
#: /proc/cpuinfo flags that mean the CPU computes each precision natively (any one suffices).
CPU_FLAGS: dict[str, tuple[str, ...]] = {"bf16": ("avx512_bf16", "amx_bf16"),
                                         "int8": ("avx512_vnni", "avx_vnni", "amx_int8")}
#: What a reduced precision must achieve against fp32 on a fixed image set (issue 14).
TARGET_MAX_ABS_DIFF = 0.01
TARGET_LABEL_AGREEMENT = 0.99
#: Generated calibration images (`media.samples` seeds from CALIBRATION_SEED on; the benchmark's
#: evaluation set uses other seeds, so calibration and evaluation never share an image).
CALIBRATION_IMAGES = 64
CALIBRATION_SEED = 10_000
#: Bump when the quantisation recipe changes, so cached int8 IRs made by an older one are not reused.
QUANTIZATION_VERSION = "nncf-int8-2"


@functools.lru_cache(maxsize=1)
def _proc_cpuinfo_flags() -> frozenset[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return None


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, or None where there is no such file (not Linux)."""
    return _proc_cpuinfo_flags()


def _openvino_capabilities() -> frozenset[str]:
    """OpenVINO's own view (`OPTIMIZATION_CAPABILITIES`: 'BF16', 'INT8', ...), used where /proc/cpuinfo
    is missing. It says 'INT8' on any x86 CPU, so it can vouch for bf16 only."""
    try:
        import openvino as ov

        return frozenset(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - no OpenVINO or no CPU plugin: nothing is vouched for
        return frozenset()


def cpu_supports(precision: str) -> str | None:
    """None if this CPU runs `precision` natively (so it is allowed), else the reason why not."""
    if precision not in PRECISIONS:
        return f"unknown precision {precision!r}; choose from {list(PRECISIONS)}"
    if precision == "fp32":
        return None
    wanted = CPU_FLAGS[precision]
    flags = cpu_flags()
    if flags is None:
        if precision == "bf16" and "BF16" in _openvino_capabilities():
            return None
        return (f"cannot tell whether this CPU has {' / '.join(wanted)} (no /proc/cpuinfo), "
                f"which {precision} needs")
    if flags.intersection(wanted):
        return None
    if precision == "bf16":
        return ("this CPU has no native bf16 (needs AVX512-BF16 or AMX: cpuinfo flag avx512_bf16 or "
                "amx_bf16); OpenVINO would run fp32 or emulate bf16, slower")
    return ("this CPU has no int8 dot-product instructions (needs VNNI or AMX: cpuinfo flag avx512_vnni, "
            "avx_vnni or amx_int8); int8 would be slower there and its agreement unmeasured")


def check_precision(precision: str, engine: str | None = None) -> str:
    """Validate `--precision` for this CPU (and `engine`, when given); returns it. Raises ConfigError
    saying why, so the CLI and server report it as a user mistake rather than running something else."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    if engine is not None and engine != "auto":
        allowed = ENGINE_PRECISIONS.get(engine, ("fp32",))
        if precision not in allowed:
            raise ConfigError(f"--precision {precision} is not available with --engine {engine} "
                              f"(it runs {', '.join(allowed)}); use --engine openvino")
    reason = cpu_supports(precision)
    if reason is not None:
        raise ConfigError(f"--precision {precision} is not supported here: {reason}; use --precision fp32")
    return precision


def openvino_config(precision: str) -> dict[str, Any]:
    """The OpenVINO compile properties that select `precision` (merged into the engine's own config).

    fp32 and int8 force `f32` for whatever is not quantised: on a bf16-capable CPU OpenVINO would
    otherwise pick bf16 silently (breaking fp32's 1e-4 agreement; for int8 the bf16 hint measured no
    faster, see docs/performance.md, and adds a second source of error). bf16 asks for bf16."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    return {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}


def calibration_images(input_size: int, n: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """`n` generated natural-looking images through the spec's preprocessing, float32 [n, 3, S, S].

    Not noise: on weights with measured BatchNorm statistics noise drives activations far out of the
    range real images give, and quantisation ranges calibrated on it would waste the 8 bits there. Not
    smooth frames alone either: photographs' texture and edges reach activations they never do, which
    int8 would clip; half the set are dead-leaves pictures for that (`media.samples.natural_frame`).
    Frame sizes vary (portrait, landscape, square) so the resize filter's effect varies too."""
    from mffmoe.media.preprocess import preprocess  # torch today; imported only when calibrating
    from mffmoe.media.samples import natural_frame

    out = np.empty((n, 3, input_size, input_size), dtype=np.float32)
    for i in range(n):
        out[i] = np.asarray(preprocess(natural_frame(i, seed), input_size))
    return out


def _static_input(graph: Any, input_size: int | None) -> int:
    """Reshape the IR to [1, 3, S, S] (the engine compiles that shape) and return S."""
    shape = graph.input(0).get_partial_shape()
    size = input_size if input_size is not None else shape[-1].get_length()
    graph.reshape([1, 3, size, size])
    return int(size)


def quantize_openvino_ir(xml_in: str | os.PathLike[str], xml_out: str | os.PathLike[str],
                         images: np.ndarray | Iterable[Any], input_size: int | None = None,
                         ignored_types: Sequence[str] = ()) -> Path:
    """Write an int8 IR (`xml_out` + its .bin) quantised from the fp32 per-expert IR `xml_in`.

    `images` are preprocessed calibration images ([N, 3, S, S] array, or an iterable of [3, S, S] /
    [1, 3, S, S] arrays or tensors: anything `np.asarray` takes). The graph is reshaped to the static
    [1, 3, S, S] input the engine compiles (S from the IR, or `input_size` when it is dynamic). Recipe:
    NNCF's default (performance) preset, symmetric int8 weights per channel and activations per tensor,
    8-bit weights in every layer (overflow fix off: only VNNI/AMX CPUs run int8, `cpu_supports`), fast
    bias correction; `ignored_types` keeps ops of those OpenVINO types in float (e.g. "GroupConvolution").
    Statistics are gathered one image at a time, the shape the engine runs. At 512 px with 64 images this
    takes 1-2 minutes per expert on 2 cores: a job for `mffmoe export`, cached, never for a first analyze.
    """
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    except ImportError as e:
        raise MissingExtraError("--precision int8 needs NNCF to quantise the graphs: pip install nncf") from e
    import openvino as ov

    core = ov.Core()
    graph = core.read_model(str(xml_in))
    size = _static_input(graph, input_size)
    batches = [np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(1, 3, size, size)) for x in images]
    if not batches:
        raise ConfigError("int8 quantisation needs at least one calibration image")
    ignored = nncf.IgnoredScope(types=list(ignored_types)) if ignored_types else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NNCF's notices about torch and its telemetry
        quantized = nncf.quantize(
            graph, nncf.Dataset(batches), subset_size=len(batches), target_device=nncf.TargetDevice.CPU,
            ignored_scope=ignored,
            advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.DISABLE))
    out = Path(xml_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def agreement(reference: Sequence[float] | np.ndarray, candidate: Sequence[float] | np.ndarray,
              threshold: float = 0.5) -> dict[str, Any]:
    """How a reduced precision's ensemble scores compare with fp32's on the same images: max and mean
    |difference|, label agreement (FAKE iff score >= threshold) and whether issue 14's targets are met."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(-1)
    if ref.shape != cand.shape or not len(ref):
        raise ValueError(f"need two equally long, non-empty score lists, got {ref.shape} and {cand.shape}")
    diff = np.abs(ref - cand)
    labels = float(np.mean((ref >= threshold) == (cand >= threshold)))
    max_diff = float(diff.max())
    return {"images": int(len(ref)), "max_abs_diff": max_diff, "mean_abs_diff": float(diff.mean()),
            "label_agreement": labels, "threshold": threshold,
            "meets_targets": bool(max_diff <= TARGET_MAX_ABS_DIFF and labels >= TARGET_LABEL_AGREEMENT)}
