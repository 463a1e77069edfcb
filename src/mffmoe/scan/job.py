"""A scan from start to end: list inputs, open RESULTS, hash and plan, analyze what is left, summarise.

Hashing comes first (on a thread pool, or on the cluster): resuming and deduplicating both key on the
content hash, and knowing every input's fate up front lets the progress bar show real work only.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.console import Console

from mffmoe.config import DetectorConfig, config_error, nest_detector_fields, resolve_weights_dir
from mffmoe.errors import ScanSourceError
from mffmoe.model.info import CheckpointInfo, read_info, trained_settings
from mffmoe.scan.decode import DecodeConfig
from mffmoe.scan.plan import Action, Planner, check_identity
from mffmoe.scan.progress import ScanProgress, ScanSummary
from mffmoe.scan.schema import ScanSettings, copy_row, make_row, weights_hash
from mffmoe.scan.sources import HashedInput, list_inputs
from mffmoe.scan.store import open_store

if TYPE_CHECKING:
    from mffmoe.scan.local_runner import LocalRunner
    from mffmoe.scan.ray_runner import RayRunner


class ScanOptions(BaseModel):
    """One scan: SOURCE, RESULTS, the detector (its DetectorConfig fields may also be given flat,
    `ScanOptions(frames=8)`) and how to run it."""

    model_config = ConfigDict(extra="forbid")

    source: Path
    out: Path
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    fmt: str = "auto"                      # parquet | jsonl | auto (by the name of out)
    workers: int | None = Field(None, ge=1, description="local decode processes")
    hash_threads: int = Field(8, ge=1)
    ray: str | None = Field(None, description='None: one machine; "": $RAY_ADDRESS or a new local Ray; '
                                              'else an address')
    replicas: int | None = Field(None, ge=1)
    replica_cpus: int | None = Field(None, ge=1)
    retry_errors: bool = False

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise config_error(e, "scan options") from None

    @model_validator(mode="before")
    @classmethod
    def _flat_detector_fields(cls, data: Any) -> Any:
        return nest_detector_fields(data)

    @model_validator(mode="after")
    def _no_early_exit(self) -> ScanOptions:
        if self.detector.early_exit:  # scans batch frames of many files: there is no per-video decision
            raise ValueError("early exit is not available in scans")
        return self


def weights_info(config: DetectorConfig) -> CheckpointInfo:
    """The identity of the weights `config` names, from metadata only: what the Ray driver needs without
    loading a model (the replicas load and check the tensors themselves)."""
    if config.untrained:
        return CheckpointInfo(source="untrained", layout="untrained", roster=config.roster,
                              input_size=config.input_size, ema=False)
    where = Path(resolve_weights_dir(config.weights)).resolve()  # every node loads the same path
    # names checked where the model is built (the detector, or the graphs' preparation): no torch here
    return read_info(where, allow_missing_ema=config.allow_missing_ema, check_names=False)


def resolve_crop(config: DetectorConfig, info: CheckpointInfo) -> DetectorConfig:
    """`config` with its crop mode and face settings made explicit: None means what the weights were
    trained on (as `Detector.from_config` resolves it), so that decoders, replicas and assembling agree."""
    return config.with_trained(trained_settings(info))


def one_shot(config: DetectorConfig) -> DetectorConfig:
    """A scan runs its files and ends: OpenVINO holds one expert at a time (`registry.one_shot_options`),
    with batches large enough that compiling each expert per batch costs little (`STREAMED_BATCH`)."""
    from mffmoe.engine.openvino_engine import STREAMED_BATCH
    from mffmoe.engine.registry import one_shot_options

    extra = {k: v for k, v in one_shot_options(config.engine).items() if k not in config.engine_options}
    if not extra:
        return config
    return config.model_copy(update={"engine_options": {**config.engine_options, **extra},
                                     "batch_size": max(config.batch_size, STREAMED_BATCH)})


def _make_runner(o: ScanOptions) -> tuple[LocalRunner | RayRunner, str, DetectorConfig]:
    """The runner, the weights identity and the detector configuration (its crop mode resolved)."""
    o = o.model_copy(update={"detector": one_shot(o.detector)})
    if o.ray is None:
        from mffmoe.inference.detector import Detector
        from mffmoe.scan.local_runner import LocalRunner

        detector = Detector.from_config(o.detector)
        assert detector.config is not None
        config = detector.config
        cfg = DecodeConfig.of(config, detector.input_size)
        return LocalRunner(detector, cfg, o.workers, o.hash_threads), weights_hash(detector.info), config

    from mffmoe.scan.ray_runner import RayRunner, ReplicaSpec

    # The driver only needs the checkpoint's identity; the replicas load the model where they run.
    info = weights_info(o.detector)
    identity = weights_hash(info)
    config = resolve_crop(o.detector, info)
    replica = config if config.untrained else config.model_copy(update={"weights": Path(info.source)})
    spec = ReplicaSpec(replica, weights_hash=identity)
    runner = RayRunner(spec, DecodeConfig.of(config, info.input_size), o.ray, o.replicas, o.replica_cpus)
    return runner, identity, config


def run_scan(o: ScanOptions, console: Console | None = None, progress: bool | None = None,
             on_row: Callable[[dict[str, Any]], None] | None = None) -> ScanSummary:
    """Run (or resume) a scan. Raises MFFMoEError subclasses for setup problems; bad files are rows."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    store = open_store(o.out, o.fmt)
    store.check_path()  # before a model loads
    owned = [os.path.abspath(p) for p in store.paths]
    source = os.path.abspath(o.source)
    if any(source == q or source.startswith(q + os.sep) for q in owned):
        raise ScanSourceError(f"{o.source}: SOURCE lies inside RESULTS ({o.out}); write the results elsewhere")
    inputs = [p for p in list_inputs(o.source)
              if not any(p == q or p.startswith(q + os.sep) for q in owned)]
    summary = ScanSummary(inputs=len(inputs), out=str(o.out))
    runner, identity, d = _make_runner(o)
    assert d.crop is not None  # resolved by _make_runner
    settings = ScanSettings(model=d.model_name, weights_hash=identity, engine=d.engine, frames=d.frames,
                            pooling=d.pooling, threshold=d.threshold, crop=d.crop,
                            face_settings=ScanSettings.face_settings_of(d, d.crop))

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
                assert item.error is not None  # unreadable: its error came instead of a hash
                summary.unreadable += 1
                write(make_row(item.path, None, None, item.error, 0.0, settings))
            elif decision.action is Action.COPY:
                assert item.content_hash is not None and decision.source is not None
                summary.copied += 1
                write(copy_row(planner.stored_row(item.content_hash), item.path, decision.source))
            elif decision.action is Action.DUPLICATE:
                assert decision.source is not None
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
                    leader = hashed.pop(done.path, None)
                    if leader is None:
                        continue  # already written (a part delivered twice)
                    summary.analyzed += 1
                    row = make_row(leader.path, leader.content_hash, leader.size, done.outcome, done.seconds,
                                   settings)
                    write(row)
                    dups = followers.pop(leader.path, [])
                    for dup in dups:
                        write(copy_row(row, dup.path, leader.path))
                    bar.advance(1 + len(dups), failed=(1 + len(dups)) if row["error_type"] else 0)
        finally:
            summary.scan_seconds = time.perf_counter() - scan_start
        if hashed:  # a runner that stops early without raising would be a bug: say so, don't hide it
            raise RuntimeError(f"internal error: {len(hashed)} file(s) were never finished")
    summary.seconds = time.perf_counter() - started
    return summary
