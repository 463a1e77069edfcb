"""The GPU benchmark (issue 14): ensemble throughput by batch size, precision and execution mode, and a
100-frame 1080p video end to end through the project's `Detector`, in one command:

    .venv/bin/python benchmarks/gpu.py --json gpu.json             # CUDA: the full grid (long with compile)
    .venv/bin/python benchmarks/gpu.py --quick                     # CUDA: a few minutes (no compile)
    .venv/bin/python benchmarks/gpu.py --device cpu --roster test_efficientnet,test_convnext --size 64 \\
        --batches 1,2 --precisions fp32,bf16 --modes eager --frames 4 --video-size 96x64   # CPU smoke run

Throughput: the whole ensemble (every expert, one after another, channels_last on CUDA, as the torch engine
runs it) on a batch already on the device, images/s per (precision, mode, batch). Precisions: fp32, and
fp16/bf16 through `torch.autocast` (the engine's `autocast`). Modes: `eager`; `graphs` (the ensemble captured
once per batch size into one CUDA graph and replayed; n/a on the CPU); `compile` (`torch.compile`,
mode="reduce-overhead") and `autotune` (mode="max-autotune"), compiled once per precision with a dynamic
batch. A mode that fails is reported as failed with its error, never fatal.

Agreement: every row scores a fixed set of natural-looking images (skimage's photographs and
`mffmoe.media.samples` frames, through the spec's preprocessing) and reports the max |P(fake) difference|
of the ensemble score against the exact reference: fp32 eager, batch 1, TF32 off. Random weights (the
default) get BatchNorm statistics measured on those images first, as a trained network's are: random
statistics saturate experts at 0 or 1, which would hide every difference.

Video: a generated H.264 video (`make_fast_video` of benchmarks/run.py, cached under --work) analysed by
`Detector` (engine torch, crop frame, a large batch, fp16 autocast on CUDA): decoding included; the first
call and the median of the warm ones. Targets printed are the issue's; they are compared, never assumed.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
#: mode name -> torch.compile mode (None: not compiled)
MODES: dict[str, str | None] = {"eager": None, "graphs": None, "compile": "reduce-overhead",
                                "autotune": "max-autotune"}
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
QUICK_BATCHES = (1, 32, 128)
# The issue's targets (issue 14): what the run is compared with, not results.
TARGET_IMAGES_PER_S = 1500.0
TARGET_DIFF = 1e-3
TARGET_VIDEO_S = 1.0
TARGET_FRAMES = 100
TARGET_VIDEO_SIZE = (1920, 1080)

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Row:
    """One (precision, mode, batch) measurement; `status` is ok, failed or n/a."""

    precision: str
    mode: str
    batch: int
    status: str = "ok"
    error: str | None = None
    images_per_s: float | None = None
    seconds_per_batch: float | None = None
    setup_s: float | None = None
    max_abs_diff: float | None = None
    max_abs_diff_expert: float | None = None
    peak_mem_mb: float | None = None
    runs_s: list[float] = field(default_factory=list)


# --- options -----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags; --quick changes only the defaults of the flags not given."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    p.add_argument("--roster", default=None, help="comma list of timm names (default: the full default roster)")
    p.add_argument("--size", type=int, default=None, help="input size (default 512)")
    p.add_argument("--weights", type=Path, default=None, help="real weights (dir or .safetensors); default random")
    p.add_argument("--batches", default=None, help=f"comma list (default {','.join(map(str, DEFAULT_BATCHES))})")
    p.add_argument("--precisions", default=None, help="comma list of fp32,fp16,bf16 (default all)")
    p.add_argument("--modes", default=None, help=f"comma list of {','.join(MODES)} (default eager,graphs,compile)")
    p.add_argument("--min-time", type=float, default=None, help="seconds per timed run (default 1.0)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per row, median taken (default 3)")
    p.add_argument("--frames", type=int, default=TARGET_FRAMES, help="video frames (made and analysed)")
    p.add_argument("--video-size", default="x".join(map(str, TARGET_VIDEO_SIZE)), help="WxH of the video")
    p.add_argument("--video-batch", type=int, default=64, help="Detector batch size for the video")
    p.add_argument("--video-autocast", default="fp16", choices=("fp16", "bf16", "none"),
                   help="the video's autocast on CUDA (the CPU runs fp32)")
    p.add_argument("--video-repeats", type=int, default=None, help="warm video runs, median taken (default 3)")
    p.add_argument("--no-video", action="store_true", help="skip the video")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True "
                   "(the project leaves it off)")
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks/.work", help="where the video is made")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--quick", action="store_true", help=f"batches {','.join(map(str, QUICK_BATCHES))}, "
                   "fp32,fp16, eager,graphs, shorter timings, one warm video run")
    args = p.parse_args(argv)
    return resolve_defaults(args)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults (--quick's where given) and check the lists."""
    from mffmoe.config import DEFAULT_INPUT_SIZE, DEFAULT_ROSTER

    q = args.quick
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.roster = tuple(_csv(args.roster)) if args.roster else DEFAULT_ROSTER
    args.size = args.size or DEFAULT_INPUT_SIZE
    args.batches = [int(b) for b in _csv(args.batches)] if args.batches else list(QUICK_BATCHES if q else
                                                                                   DEFAULT_BATCHES)
    args.precisions = _csv(args.precisions) if args.precisions else (["fp32", "fp16"] if q else list(PRECISIONS))
    args.modes = _csv(args.modes) if args.modes else (["eager", "graphs"] if q else ["eager", "graphs", "compile"])
    args.min_time = args.min_time if args.min_time is not None else (0.25 if q else 1.0)
    args.repeats = args.repeats or (2 if q else 3)
    args.video_repeats = args.video_repeats or (1 if q else 3)
    w, _, h = args.video_size.partition("x")
    args.video_wh = (int(w), int(h))
    for name, values, known in (("precision", args.precisions, PRECISIONS), ("mode", args.modes, MODES)):
        unknown = [v for v in values if v not in known]
        if unknown:
            raise SystemExit(f"unknown {name} {unknown}; choose from {','.join(known)}")
    if any(b < 1 for b in args.batches) or args.frames < 1:
        raise SystemExit("batch sizes and --frames must be >= 1")
    return args


# --- inputs and model --------------------------------------------------------------------------------
def natural_images(size: int) -> tuple[list[str], torch.Tensor]:
    """A fixed set of natural-looking images through the spec's preprocessing: skimage's photographs (when
    scikit-image is installed) and four `media.samples` frames. Noise would drive activations out of range."""
    import numpy as np

    from mffmoe.media.preprocess import preprocess
    from mffmoe.media.samples import sample_frame

    pictures: list[tuple[str, Any]] = []
    with contextlib.suppress(ImportError):
        from skimage import data
        pictures += [(name, getattr(data, name)()) for name in ("astronaut", "coffee", "chelsea", "rocket")]
    pictures += [(f"sample-{i}", sample_frame(640, 480, t=i, seed=i)) for i in range(4)]
    return [n for n, _ in pictures], torch.from_numpy(np.stack([preprocess(a, size) for _, a in pictures]))


def build_model(args: argparse.Namespace, device: torch.device, images: torch.Tensor) -> tuple[Any, dict[str, Any]]:
    """The ensemble on `device`: `--weights` as loaded, else random weights with measured BatchNorm."""
    from mffmoe.model.checkpoint import load_weights, untrained_model

    t0 = time.perf_counter()
    if args.weights:
        model, info = load_weights(args.weights)
        args.roster, args.size = tuple(info.roster), int(info.input_size)
    else:
        model, info = untrained_model(args.roster, args.size)
    model = model.eval().requires_grad_(False).to(device)
    if not args.weights:
        measure_batchnorm(model, images.to(device))
    for expert, cl in zip(model.experts, channels_last_flags(model.roster, device), strict=True):
        if cl:
            expert.to(memory_format=torch.channels_last)
    sync(device)
    meta = {"weights": str(args.weights) if args.weights else "random (BatchNorm measured on the images)",
            "roster": list(model.roster), "input_size": model.input_size,
            "parameters": sum(p.numel() for p in model.parameters()), "load_s": time.perf_counter() - t0,
            "weights_mem_mb": mem_mb(device, torch.cuda.memory_allocated) if device.type == "cuda" else None}
    return model, meta


def measure_batchnorm(model: torch.nn.Module, images: torch.Tensor) -> None:
    """BatchNorm running statistics = their exact averages over `images` (as `testing.checkpoints` does, on
    the model's device): a trained network's activations, not random ones that saturate."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for chunk in images.split(8):
            model(chunk)
    for m in norms:
        m.momentum = 0.1
    model.eval()


def channels_last_flags(roster: Sequence[str], device: torch.device) -> list[bool]:
    """As the torch engine: channels_last for every expert on CUDA, for EfficientNets on the CPU."""
    return [device.type == "cuda" or "efficientnet" in name for name in roster]


def log(text: str) -> None:
    """Progress on stderr (stdout carries the tables)."""
    print(text, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mem_mb(device: torch.device, stat: Callable[[torch.device], int]) -> float:
    return stat(device) / 2**20


# --- forwards ----------------------------------------------------------------------------------------
def autocast(device: torch.device, precision: str, cache: bool = True) -> contextlib.AbstractContextManager[Any]:
    """fp32: nothing; fp16/bf16: torch.autocast (no weight cache inside a CUDA graph capture, as torch asks)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)


def ensemble_forward(experts: Sequence[Callable[[torch.Tensor], torch.Tensor]], flags: Sequence[bool],
                     device: torch.device, precision: str, cache: bool = True,
                     step: Callable[[], None] | None = None) -> Forward:
    """x [B,3,S,S] on the device -> P(fake) [B, E] in fp32: every expert, one after another (the torch
    engine's CUDA path); `experts` map images to logits (modules, or their compiled forms)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        if step is not None:
            step()  # compiled with CUDA graphs: a new iteration, earlier outputs may be overwritten
        out = []
        with autocast(device, precision, cache):
            for expert, cl in zip(experts, flags, strict=True):
                xi = x.contiguous(memory_format=torch.channels_last) if cl else x
                out.append(torch.softmax(expert(xi).float(), dim=1)[:, 1])
        return torch.stack(out, dim=1)
    return forward


def graphed(forward: Forward, example: torch.Tensor) -> Forward:
    """`forward` captured once into a CUDA graph for `example`'s shape; each call copies its input into the
    static input and replays. The output tensor is reused: read it before the next call."""
    static_in = example.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up off the capture stream (cuBLAS/cuDNN handles, workspaces)
            forward(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = forward(static_in)

    def replay(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x)
        graph.replay()
        return static_out
    return replay


def compiled_experts(model: Any, mode: str) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """Each expert through torch.compile, dynamic batch: one compile per precision serves every batch size."""
    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, 64)  # 2 same-class experts x precisions x batch 1 / dynamic
    cfg.fail_on_recompile_limit_hit = True  # never fall back to eager silently: the row fails instead
    return [torch.compile(e, mode=MODES[mode], dynamic=True) for e in model.experts]


# --- measurements ------------------------------------------------------------------------------------
def tile(images: torch.Tensor, batch: int) -> torch.Tensor:
    """`batch` images: the set repeated."""
    reps = math.ceil(batch / len(images))
    return images.repeat(reps, 1, 1, 1)[:batch]


def score(forward: Forward, images: torch.Tensor, batch: int) -> torch.Tensor:
    """P(fake) per expert [N, E] (float64, CPU) of every image, in chunks of `batch` (the last one padded)."""
    rows = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        n = len(chunk)
        rows.append(forward(tile(chunk, batch))[:n].double().cpu())
    return torch.cat(rows)


def time_forward(forward: Forward, x: torch.Tensor, device: torch.device, min_time: float,
                 repeats: int) -> tuple[float, list[float]]:
    """Median seconds per call over `repeats` runs of enough calls to last `min_time` each."""
    sync(device)
    t0 = time.perf_counter()
    forward(x)
    sync(device)
    one = max(time.perf_counter() - t0, 1e-6)
    calls = max(1, math.ceil(min_time / one))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            forward(x)
        sync(device)
        runs.append((time.perf_counter() - t0) / calls)
    return statistics.median(runs), runs


@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """TF32 off (cuDNN uses it for fp32 convolutions by default): the reference is exact fp32."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def reference_scores(model: Any, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """fp32 eager, batch 1, TF32 off: what every row is compared with."""
    forward = ensemble_forward(list(model.experts), channels_last_flags(model.roster, device), device, "fp32")
    with exact_fp32(device), torch.inference_mode():
        return score(forward, images, 1)


def make_forward(model: Any, precision: str, mode: str, batch: int, x: torch.Tensor, device: torch.device,
                 compiled: dict[tuple[str, str], list[Any]]) -> Forward:
    """The callable a row times: eager, a CUDA graph of the eager forward, or the compiled experts."""
    flags = channels_last_flags(model.roster, device)
    if mode == "eager":
        return ensemble_forward(list(model.experts), flags, device, precision)
    if mode == "graphs":
        return graphed(ensemble_forward(list(model.experts), flags, device, precision, cache=False), x)
    key = (precision, mode)
    if key not in compiled:
        torch._dynamo.reset()
        compiled.clear()  # one precision's compiled experts at a time
        compiled[key] = compiled_experts(model, mode)
    # both compile modes replay CUDA graphs on CUDA (max-autotune too): each call starts a new step
    step = torch.compiler.cudagraph_mark_step_begin if device.type == "cuda" else None
    return ensemble_forward(compiled[key], flags, device, precision, step=step)


def measure_row(model: Any, row: Row, images: torch.Tensor, reference: torch.Tensor, device: torch.device,
                args: argparse.Namespace, compiled: dict[tuple[str, str], list[Any]]) -> Row:
    """One row: build the callable (timed: capture or compile), score the images, time, peak memory."""
    if row.mode == "graphs" and device.type != "cuda":
        row.status, row.error = "n/a", "CUDA graphs need CUDA"
        return row
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    forward: Forward | None = None
    x: torch.Tensor | None = None
    try:
        with torch.inference_mode():
            x = tile(images, row.batch).to(device)
            t0 = time.perf_counter()
            forward = make_forward(model, row.precision, row.mode, row.batch, x, device, compiled)
            forward(x)  # compiles on first use
            sync(device)
            row.setup_s = time.perf_counter() - t0
            probs = score(forward, images, row.batch)
            seconds, row.runs_s = time_forward(forward, x, device, args.min_time, args.repeats)
        row.seconds_per_batch, row.images_per_s = seconds, row.batch / seconds
        row.max_abs_diff = float((probs.mean(1) - reference.mean(1)).abs().max())
        row.max_abs_diff_expert = float((probs - reference).abs().max())
    except Exception as e:  # a mode that fails is a result (OOM, capture or compile errors), not a crash
        row.status, row.error = "failed", error_text(e)
        compiled.clear()
        torch._dynamo.reset()
    finally:
        del forward, x  # before the memory is read and the cache emptied
        gc.collect()
        if device.type == "cuda":
            row.peak_mem_mb = mem_mb(device, torch.cuda.max_memory_allocated)
            torch.cuda.empty_cache()
    return row


def error_text(e: BaseException) -> str:
    """The error's type and first line: a table cell, not a traceback."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__


def throughput(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Every (precision, mode, batch) row against the exact reference."""
    names, images = natural_images(args.size)
    model, meta = build_model(args, device, images)
    if args.weights:  # the weights decide the input size: the images follow
        names, images = natural_images(args.size)
    images = images.to(device)
    t0 = time.perf_counter()
    reference = reference_scores(model, images, device)
    meta["reference_s"] = time.perf_counter() - t0
    log(f"model ready in {meta['load_s']:.1f} s, reference in {meta['reference_s']:.1f} s")
    rows: list[Row] = []
    compiled: dict[tuple[str, str], list[Any]] = {}
    for precision in args.precisions:
        for mode in args.modes:
            for batch in args.batches:
                row = measure_row(model, Row(precision, mode, batch), images, reference, device, args, compiled)
                rows.append(row)
                log(f"  {precision:4} {mode:8} batch {batch:3}: {row_text(row)}")
        compiled.clear()
        torch._dynamo.reset()
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"model": meta, "reference": {"precision": "fp32", "mode": "eager", "batch": 1, "tf32": False,
                                         "images": names, "scores": reference.mean(1).tolist()},
            "rows": [asdict(r) for r in rows], "best": best_rows(rows)}


def best_rows(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per (precision, batch): the fastest mode that ran."""
    best: dict[tuple[str, int], Row] = {}
    for r in rows:
        key = (r.precision, r.batch)
        if r.images_per_s is not None and (key not in best or r.images_per_s > (best[key].images_per_s or 0)):
            best[key] = r
    return [{"precision": r.precision, "batch": r.batch, "mode": r.mode, "images_per_s": r.images_per_s,
             "max_abs_diff": r.max_abs_diff, "peak_mem_mb": r.peak_mem_mb} for r in best.values()]


# --- video -------------------------------------------------------------------------------------------
def load_run_module() -> ModuleType:
    """benchmarks/run.py (not a package), for its `make_fast_video`: one way to make the test video."""
    spec = importlib.util.spec_from_file_location("mffmoe_bench_run", ROOT / "benchmarks/run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def video_bench(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The video through `Detector` (decode, preprocess, engine, pooling): first call and warm median."""
    from mffmoe.config import DetectorConfig
    from mffmoe.inference.detector import Detector

    width, height = args.video_wh
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"video_{args.frames}f_{width}x{height}.mp4"
    t0 = time.perf_counter()
    load_run_module().make_fast_video(path, args.frames / 25, fps=25, width=width, height=height)
    make_s = time.perf_counter() - t0
    autocast_name = None if device.type != "cuda" or args.video_autocast == "none" else args.video_autocast
    source: dict[str, Any] = ({"weights": args.weights} if args.weights else
                              {"untrained": True, "roster": tuple(args.roster), "input_size": args.size})
    config = DetectorConfig(**source, device=str(device), engine="torch", batch_size=args.video_batch,
                            frames=args.frames, crop="frame",
                            engine_options={"autocast": autocast_name} if autocast_name else {})
    log(f"video {path.name} ready in {make_s:.1f} s; analysing with Detector")
    t0 = time.perf_counter()
    det = Detector.from_config(config)
    load_s = time.perf_counter() - t0
    times, result = [], None
    for _ in range(1 + args.video_repeats):  # the first call is reported apart (cuDNN set-up, caches)
        sync(device)
        t0 = time.perf_counter()
        result = det.analyze(path)
        sync(device)
        times.append(time.perf_counter() - t0)
    det.engine.close()
    assert result is not None
    warm = statistics.median(times[1:])
    analysed = getattr(result, "frames_analyzed", 0)
    return {"path": str(path), "width": width, "height": height, "frames": args.frames, "make_s": make_s,
            "frames_analyzed": analysed, "frames_failed": getattr(result, "frames_failed", 0),
            "batch_size": args.video_batch, "autocast": autocast_name, "crop": "frame", "load_s": load_s,
            "first_s": times[0], "seconds": warm, "warm_s": times[1:], "frames_per_s": analysed / warm,
            "score": result.score}


# --- report ------------------------------------------------------------------------------------------
def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "threads": torch.get_num_threads(), "cuda": torch.version.cuda,
                            "cudnn_benchmark": torch.backends.cudnn.benchmark,
                            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
                            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gb=props.total_memory / 2**30, cudnn=torch.backends.cudnn.version())
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def targets(res: dict[str, Any], args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """The issue's targets, met or not by this run (n/a where this run does not measure what they name)."""
    from mffmoe.config import DEFAULT_INPUT_SIZE, DEFAULT_ROSTER

    full = tuple(args.roster) == DEFAULT_ROSTER and args.size == DEFAULT_INPUT_SIZE
    out = []
    fp16 = [r for r in res.get("rows", []) if r["precision"] == "fp16" and r["images_per_s"] is not None
            and r["max_abs_diff"] is not None and r["max_abs_diff"] <= TARGET_DIFF]
    best = max(fp16, key=lambda r: r["images_per_s"], default=None)
    t1: dict[str, Any] = {"name": f"fp16 >= {TARGET_IMAGES_PER_S:g} images/s, max abs diff <= {TARGET_DIFF:g}, "
                                  "one H200",
                          "measured": None, "met": None}
    if best:
        t1["measured"] = (f"{best['images_per_s']:.1f} images/s ({best['mode']}, batch {best['batch']}, "
                          f"diff {best['max_abs_diff']:.2e})")
    if not full or device.type != "cuda" or "fp16" not in args.precisions:
        t1["note"] = "n/a: needs the default roster at 512 px, fp16, on CUDA"
    else:
        t1["met"] = bool(best and best["images_per_s"] >= TARGET_IMAGES_PER_S)
        if not args.weights:  # deep random networks amplify rounding: their differences are not the model's
            t1["note"] = "random weights: judge the difference with --weights"
    out.append(t1)
    video = res.get("video")
    t2: dict[str, Any] = {"name": f"{TARGET_FRAMES}-frame {TARGET_VIDEO_SIZE[0]}x{TARGET_VIDEO_SIZE[1]} video "
                                  f"in < {TARGET_VIDEO_S:g} s", "measured": None, "met": None}
    if video:
        t2["measured"] = f"{video['seconds']:.3f} s ({video['frames_per_s']:.1f} frames/s)"
    if not (video and full and args.frames >= TARGET_FRAMES and tuple(args.video_wh) == TARGET_VIDEO_SIZE):
        t2["note"] = f"n/a: needs the default roster, {TARGET_FRAMES} frames of 1080p"
    else:
        t2["met"] = video["seconds"] < TARGET_VIDEO_S
    out.append(t2)
    return out


def _f(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def row_text(r: Row) -> str:
    if r.status != "ok":
        return f"{r.status} {r.error or ''}"
    return f"{_f(r.images_per_s, '.1f')} images/s, |diff| {_f(r.max_abs_diff, '.2e')}, setup {_f(r.setup_s, '.1f')} s"


def tables(res: dict[str, Any]) -> str:
    """Markdown: machine, every row, the best mode per (precision, batch), the video, the targets."""
    m = res["machine"]
    lines = [f"GPU benchmark on {m['name']} ({m['device']}), torch {m['torch']}, "
             f"roster {','.join(res['model']['roster'])} at {res['model']['input_size']} px, "
             f"weights: {res['model']['weights']}", "",
             "| precision | mode | batch | images/s | max abs diff | peak MB | setup s | status |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in res["rows"]:
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error']}"
        lines.append(f"| {r['precision']} | {r['mode']} | {r['batch']} | {_f(r['images_per_s'], '.1f')} | "
                     f"{_f(r['max_abs_diff'], '.2e')} | {_f(r['peak_mem_mb'], '.0f')} | {_f(r['setup_s'], '.1f')} | "
                     f"{status} |")
    lines += ["", "| precision | batch | best mode | images/s | max abs diff | peak MB |",
              "|---|---:|---|---:|---:|---:|"]
    for b in res["best"]:
        lines.append(f"| {b['precision']} | {b['batch']} | {b['mode']} | {_f(b['images_per_s'], '.1f')} | "
                     f"{_f(b['max_abs_diff'], '.2e')} | {_f(b['peak_mem_mb'], '.0f')} |")
    v = res.get("video")
    if v:
        lines += ["", "| video | frames | batch | autocast | load s | first s | warm s | frames/s |",
                  "|---|---:|---:|---|---:|---:|---:|---:|",
                  f"| {v['width']}x{v['height']} H.264 | {v['frames_analyzed']} | {v['batch_size']} | "
                  f"{v['autocast'] or 'fp32'} | {v['load_s']:.1f} | {v['first_s']:.3f} | {v['seconds']:.3f} | "
                  f"{v['frames_per_s']:.1f} |"]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for t in res["targets"]:
        met = {True: "met", False: "not met", None: "n/a"}[t["met"]]
        if t.get("note"):
            met = t["note"] if t["met"] is None else f"{met} ({t['note']})"
        lines.append(f"| {t['name']} | {t['measured'] or 'n/a'} | {met} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu for a tiny run)")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    res: dict[str, Any] = {"machine": machine(device),
                           "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    res.update(throughput(args, device))
    if not args.no_video:
        res["video"] = video_bench(args, device)
    res["targets"] = targets(res, args, device)
    print(tables(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    return res


if __name__ == "__main__":
    main()
