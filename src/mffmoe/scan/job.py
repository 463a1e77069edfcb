"""A scan from start to end: list inputs, open RESULTS, hash and plan, analyze what is left, summarise.

Hashing comes first (on a thread pool, or on the cluster): resuming and deduplicating both key on the
content hash, and knowing every input's fate up front lets the progress bar show real work only.
"""
from __future__ import annotations

import os
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from rich.console import Console

from mffmoe.config import DEFAULT_FRAMES, DEFAULT_THRESHOLD, resolve_weights_dir
from mffmoe.detector import Detector
from mffmoe.errors import ScanSourceError
from mffmoe.pooling import get_pooling
from mffmoe.scan.assemble import NoEngine
from mffmoe.scan.decode import DecodeConfig
from mffmoe.scan.plan import Action, Planner, check_identity
from mffmoe.scan.progress import ScanProgress, ScanSummary
from mffmoe.scan.schema import ScanSettings, copy_row, make_row, weights_hash
from mffmoe.scan.sources import HashedInput, list_inputs
from mffmoe.scan.store import open_store


@dataclass
class ScanOptions:
    source: Path
    out: Path
    weights: Optional[Path] = None
    frames: int = DEFAULT_FRAMES
    engine: str = "torch"
    device: str = "auto"
    batch_size: int = 16
    threshold: float = DEFAULT_THRESHOLD
    pooling: str = "mean"
    fmt: str = "auto"                    # parquet | jsonl | auto (by the name of out)
    workers: Optional[int] = None        # local decode processes
    hash_threads: int = 8
    ray: Optional[str] = None            # None: one machine; "": $RAY_ADDRESS or a new local Ray; else an address
    replicas: Optional[int] = None
    replica_cpus: Optional[int] = None
    retry_errors: bool = False
    untrained: bool = False
    allow_missing_ema: bool = False
    max_image_pixels: Optional[int] = None


def _detector_kwargs(o: ScanOptions) -> dict[str, Any]:
    return dict(batch_size=o.batch_size, threshold=o.threshold, frames=o.frames, pooling=o.pooling,
                max_image_pixels=o.max_image_pixels)


def _make_runner(o: ScanOptions):
    """The detector that builds results here, the runner, and the weights identity."""
    if o.ray is None:
        from mffmoe.scan.local_runner import LocalRunner

        if o.untrained:
            detector = Detector.untrained(device=o.device, engine=o.engine, **_detector_kwargs(o))
        else:
            detector = Detector.from_dir(o.weights, device=o.device, engine=o.engine,
                                         allow_missing_ema=o.allow_missing_ema, **_detector_kwargs(o))
        cfg = DecodeConfig(detector.input_size, o.frames, o.max_image_pixels)
        return detector, LocalRunner(detector, cfg, o.workers, o.hash_threads), weights_hash(detector.info)

    from mffmoe.model.checkpoint import load_weights, untrained_model
    from mffmoe.scan.ray_runner import RayRunner, ReplicaSpec

    # The driver only needs the checkpoint's identity; the replicas load the model where they run.
    if o.untrained:
        model, info = untrained_model(seed=0)
    else:
        model, info = load_weights(resolve_weights_dir(o.weights), allow_missing_ema=o.allow_missing_ema)
    del model
    builder = Detector(NoEngine(info), info, untrained=o.untrained, **_detector_kwargs(o))
    identity = weights_hash(info)
    spec = ReplicaSpec(weights=None if o.untrained else str(Path(info.source).resolve()), engine=o.engine,
                       device=o.device, batch_size=o.batch_size, weights_hash=identity, threads=1,
                       untrained=o.untrained, allow_missing_ema=o.allow_missing_ema, roster=info.roster,
                       input_size=info.input_size)
    cfg = DecodeConfig(info.input_size, o.frames, o.max_image_pixels)
    return builder, RayRunner(builder, spec, cfg, o.ray, o.replicas, o.replica_cpus), identity


def run_scan(o: ScanOptions, console: Console | None = None, progress: bool | None = None,
             on_row: Callable[[dict[str, Any]], None] | None = None) -> ScanSummary:
    """Run (or resume) a scan. Raises MFFMoEError subclasses for setup problems; bad files are rows."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    get_pooling(o.pooling)
    if o.frames < 1 or o.batch_size < 1:
        raise ValueError("frames and batch size must be at least 1")
    store = open_store(o.out, o.fmt)
    owned = [os.path.abspath(p) for p in store.paths]
    source = os.path.abspath(o.source)
    if any(source == q or source.startswith(q + os.sep) for q in owned):
        raise ScanSourceError(f"{o.source}: SOURCE lies inside RESULTS ({o.out}); write the results elsewhere")
    inputs = [p for p in list_inputs(o.source)
              if not any(p == q or p.startswith(q + os.sep) for q in owned)]
    summary = ScanSummary(inputs=len(inputs), out=str(o.out))
    builder, runner, identity = _make_runner(o)
    settings = ScanSettings(model=builder.model_name, weights_hash=identity, engine=o.engine, frames=o.frames,
                            pooling=o.pooling, threshold=o.threshold)

    with store, runner, ScanProgress(console, progress) as bar:
        summary.runner = runner.describe()
        previous = store.load()
        check_identity(previous, settings)
        planner = Planner(previous, retry_errors=o.retry_errors)

        def write(row: dict[str, Any]) -> None:
            store.append(row)
            summary.count(row)
            if on_row is not None:
                on_row(row)

        # Phase 1: hash and plan. Rows that need no analysis are written now.
        hashed: dict[str, HashedInput] = {}
        followers: dict[str, list[HashedInput]] = {}
        todo: list[str] = []
        bar.phase("hashing", len(inputs))
        for item in runner.hash(inputs):
            decision = planner.decide(item)
            if decision.action is Action.SKIP:
                summary.skipped += 1
            elif decision.action is Action.UNREADABLE:
                summary.unreadable += 1
                write(make_row(item.path, None, None, item.error, 0.0, settings))
            elif decision.action is Action.COPY:
                summary.copied += 1
                write(copy_row(planner.stored_row(item.content_hash), item.path, decision.source))
            elif decision.action is Action.DUPLICATE:
                summary.duplicates += 1
                followers.setdefault(decision.source, []).append(item)
            else:
                hashed[item.path] = item
                todo.append(item.path)
            bar.advance(failed=int(decision.action is Action.UNREADABLE))

        # Phase 2: analyze; each finished file also settles its duplicates.
        bar.phase("analyzing", len(todo) + summary.duplicates)
        scan_start = time.perf_counter()
        try:
            with closing(runner.run(todo)) as finished:  # stop workers at once if we leave early
                for done in finished:
                    item = hashed.pop(done.path, None)
                    if item is None:
                        continue  # already written (a part delivered twice)
                    summary.analyzed += 1
                    row = make_row(item.path, item.content_hash, item.size, done.outcome, done.seconds, settings)
                    write(row)
                    dups = followers.pop(item.path, [])
                    for dup in dups:
                        write(copy_row(row, dup.path, item.path))
                    bar.advance(1 + len(dups), failed=(1 + len(dups)) if row["error_type"] else 0)
        finally:
            summary.scan_seconds = time.perf_counter() - scan_start
        if hashed:  # a runner that stops early without raising would be a bug: say so, don't hide it
            raise RuntimeError(f"internal error: {len(hashed)} file(s) were never finished")
    summary.seconds = time.perf_counter() - started
    return summary
