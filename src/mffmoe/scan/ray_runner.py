"""Ray: the same scan over a cluster (or a local Ray instance), with Ray Data doing the scheduling.

    paths -> [hash tasks] -> driver plans -> paths to scan -> [decode tasks] -> [model replicas] -> driver

Decoding runs as Ray tasks that stream a file's parts (an image, or a video's frames one by one); the
model runs in an actor pool, one replica per GPU or per group of cores, fed batches that mix frames of
many files; Ray Data streams blocks between the stages with backpressure. The driver only assembles
finished files and writes RESULTS, with the same code as a local scan, so the rows are the same.

Every node must see the input paths and the weights at the same paths (a shared file system), and have
mffmoe installed; each replica checks that its weights hash to the driver's.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import sys
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from mffmoe.config import DetectorConfig
from mffmoe.errors import DecoderCrashError, ErrorInfo, ScanError
from mffmoe.inference.detector import Detector
from mffmoe.scan.assemble import Assembler, Finished, score_parts
from mffmoe.scan.cores import claim_cores
from mffmoe.scan.decode import DecodeConfig, decode_file, from_columns, to_columns
from mffmoe.scan.schema import weights_hash
from mffmoe.scan.sources import HashedInput, hash_file

#: Files per decode task: small enough to spread work and isolate failures, large enough that task
#: overhead stays negligible.
FILES_PER_TASK = 8
#: Retries of a decode task whose worker process died: none here. The files of a failed task get their
#: second attempt in `run`'s second pass instead, one file per task, which also isolates the culprit.
DECODE_RETRIES = 0


@dataclass(frozen=True)
class ReplicaSpec:
    """How a replica builds its detector: `Detector.from_config(detector)`, the weights loaded where it runs
    from the same (absolute) path, which must hash to `weights_hash`. `threads` (and the device) are
    set when the replicas are planned for the cluster."""

    detector: DetectorConfig
    weights_hash: str
    threads: int | None = None


def replica_env() -> dict[str, str]:
    """Environment for the job's Ray workers: glibc's huge pages for large allocations, as the `mffmoe`
    command sets for itself (`mffmoe._entry`: the OpenVINO engine's released activation buffers then
    fault in as huge pages), unless MFFMOE_HUGEPAGES=0."""
    from mffmoe._util.hugepages import tunables_with_huge_pages

    current = os.environ.get("GLIBC_TUNABLES", "")
    wanted = tunables_with_huge_pages(current) or current
    return {"GLIBC_TUNABLES": wanted} if wanted else {}


class Replica:
    """One model replica (a Ray Data actor): scores the pixel rows of each batch, passes the rest on."""

    def __init__(self, spec: ReplicaSpec) -> None:
        if spec.threads is None:
            raise ScanError("internal error: a replica was started before the replicas were planned")
        # A core group of its own, before the engine sizes its thread pools from the affinity.
        self.cores = claim_cores(spec.threads)
        self.detector = Detector.from_config(spec.detector)
        if "torch" in sys.modules:  # the torch engine (the exported engines size their own threads)
            sys.modules["torch"].set_num_threads(max(1, spec.threads))
        found = weights_hash(self.detector.info)
        if found != spec.weights_hash:
            raise ScanError(f"replica on {socket.gethostname()} loaded weights {found} from {spec.detector.weights}, "
                            f"but the driver has {spec.weights_hash}: every node needs the same weights at that path")
        self.input_size = self.detector.input_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = from_columns(batch, self.input_size)
        todo = [p for p in parts if p.pixels is not None]
        if todo:
            score_parts(self.detector, todo)
        return to_columns(parts)


def decode_batch(batch: dict[str, np.ndarray], cfg: DecodeConfig) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data UDF: the paths of a batch -> their parts, streamed one per output batch."""
    for path in batch["path"]:
        for part in decode_file(str(path), cfg):
            yield to_columns([part])


def _hash_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    hashed = [hash_file(str(p)) for p in batch["path"]]
    return {"path": np.array([h.path for h in hashed], dtype=object),
            "content_hash": np.array([h.content_hash or "" for h in hashed], dtype=object),
            "size": np.array([-1 if h.size is None else h.size for h in hashed], dtype=np.int64),
            "error_type": np.array([h.error.type if h.error else "" for h in hashed], dtype=object),
            "error_kind": np.array([h.error.kind if h.error else "" for h in hashed], dtype=object),
            "error_message": np.array([h.error.message if h.error else "" for h in hashed], dtype=object)}


class RayRunner:
    name = "ray"

    def __init__(self, spec: ReplicaSpec, cfg: DecodeConfig, address: str | None = None,
                 replicas: int | None = None, replica_cpus: int | None = None,
                 decode_fn: Callable[..., Iterator[dict[str, np.ndarray]]] = decode_batch) -> None:
        self.decode_fn = decode_fn
        self.spec = spec
        self.cfg = cfg
        self.address = address
        self.replicas = replicas
        self.replica_cpus = replica_cpus
        self._started = False

    # -- cluster -----------------------------------------------------------------------------------
    def __enter__(self) -> RayRunner:
        import ray
        import ray.data

        if not ray.is_initialized():
            # No address: join $RAY_ADDRESS (as `ray job submit` sets it) or start a local instance.
            try:
                ray.init(address=self.address or None, include_dashboard=False, logging_level=logging.WARNING,
                         runtime_env={"env_vars": replica_env()})
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"the Ray cluster at {self.address}" if self.address else "Ray"
                raise ScanError(f"cannot start or join {where}: {e}") from e
            self._started = True
        ctx = ray.data.DataContext.get_current()
        self._saved = {k: getattr(ctx, k) for k in ("enable_progress_bars", "max_errored_blocks")}
        ctx.enable_progress_bars = False     # the scan has its own progress bar
        ctx.max_errored_blocks = -1          # a crashed decode task loses its files, not the scan (see run)
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        try:
            self._plan_replicas(ray.cluster_resources())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        import ray
        import ray.data

        ctx = ray.data.DataContext.get_current()
        for key, value in getattr(self, "_saved", {}).items():
            setattr(ctx, key, value)
        if self._started:
            ray.shutdown()

    def _plan_replicas(self, resources: dict[str, float]) -> None:
        """One replica per GPU, else one per group of `replica_cpus` cores. Replicas reserve at most half
        the cluster's CPUs in Ray's bookkeeping, so decode tasks always find room to run."""
        cpus = float(resources.get("CPU", 1.0))
        gpus = int(resources.get("GPU", 0))
        asked = self.spec.detector.device
        if asked == "cuda" and gpus < 1:
            raise ScanError("--device cuda was asked for, but the Ray cluster has no GPUs")
        self.use_gpu = gpus >= 1 and asked in ("auto", "cuda")
        if self.use_gpu:
            self.n_replicas = self.replicas or gpus
            threads = self.replica_cpus or 2
            self.cpus_per_replica = min(float(threads), cpus / (2 * self.n_replicas))
            device = "cuda"
        else:
            group = self.replica_cpus or min(4.0, cpus)
            self.n_replicas = self.replicas or max(1, int(cpus // group))
            threads = self.replica_cpus or max(1, int(cpus // self.n_replicas))
            self.cpus_per_replica = min(float(threads), cpus / (2 * self.n_replicas))
            device = "cpu"
        self.spec = replace(self.spec, detector=self.spec.detector.model_copy(update={"device": device}),
                            threads=threads)
        self.cluster = f"{cpus:g} CPU(s), {gpus} GPU(s)"

    def describe(self) -> str:
        where = "1 GPU" if self.use_gpu else f"{self.spec.threads} thread(s)"
        return f"ray ({self.cluster}): {self.n_replicas} model replica(s), {where} each"

    # -- stages ------------------------------------------------------------------------------------
    def hash(self, paths: list[str]) -> Iterator[HashedInput]:
        """Content hashes computed on the cluster (where the files are read), yielded in input order."""
        import ray.data

        if not paths:
            return
        ds: ray.data.Dataset = ray.data.from_items([{"path": p} for p in paths],
                                                   override_num_blocks=min(len(paths), 1000))
        ds = ds.map_batches(_hash_batch, batch_size=64, batch_format="numpy", num_cpus=0.5)
        found: dict[str, HashedInput] = {}
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i, path in enumerate(b["path"]):
                err = None
                if b["error_type"][i]:
                    err = ErrorInfo(str(b["error_type"][i]), str(b["error_kind"][i]), str(b["error_message"][i]))
                size = int(b["size"][i])
                found[str(path)] = HashedInput(str(path), str(b["content_hash"][i]) or None,
                                               None if size < 0 else size, err)
        missing = [p for p in paths if p not in found]
        if missing:
            raise ScanError(f"hashing failed on the cluster for {len(missing)} file(s), e.g. {missing[0]}")
        for path in paths:
            yield found[path]

    def _pipeline(self, paths: list[str], files_per_task: int) -> Iterable[dict[str, np.ndarray]]:
        import ray.data

        blocks = max(1, math.ceil(len(paths) / files_per_task))
        ds: ray.data.Dataset = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
        with warnings.catch_warnings():
            # Ray Data's default retries a task whose process died forever, so a file that crashes its
            # decoder would loop; `max_retries` has no named parameter yet (Ray 2.60), hence the filter.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map_batches(self.decode_fn, batch_size=1, batch_format="numpy", fn_kwargs={"cfg": self.cfg},
                                num_cpus=1, max_retries=DECODE_RETRIES)
        ds = ds.map_batches(Replica, fn_constructor_kwargs={"spec": self.spec},
                            batch_size=self.spec.detector.batch_size,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=self.n_replicas),
                            num_cpus=self.cpus_per_replica, num_gpus=1 if self.use_gpu else 0)
        return ds.iter_batches(batch_size=None, batch_format="numpy")

    def run(self, todo: list[str]) -> Generator[Finished, None, None]:
        """Scan `todo`. Files whose decode task died (a decoder crash kills the worker process) are
        retried one per task; those that still fail become error rows, unless so many fail that the
        cluster itself must be broken, which stops the scan instead."""
        if not todo:
            return
        # results are built here; the model runs on replicas
        assembler = Assembler.for_config(self.spec.detector, self.cfg.input_size)
        unfinished = set(todo)
        for files_per_task, paths in ((FILES_PER_TASK, todo), (1, None)):
            if paths is None:
                paths = [p for p in todo if p in unfinished]
                if not paths:
                    return
            try:
                for batch in self._pipeline(paths, files_per_task):
                    for part in from_columns(batch):
                        if part.key not in unfinished:
                            continue  # a retried task resent a finished file
                        for done in assembler.add(part):
                            unfinished.discard(done.path)
                            yield done
            except Exception as e:  # replicas failed to start (e.g. other weights), or the cluster went away
                last = (str(e).strip().splitlines() or [""])[-1]
                raise ScanError(f"the Ray pipeline failed: {type(e).__name__}: {last}") from e
        lost = [p for p in todo if p in unfinished]
        if len(lost) >= 2 and len(lost) > len(todo) // 2:
            raise ScanError(f"decoding failed for {len(lost)} of {len(todo)} files on the cluster, which points "
                            f"at the cluster rather than the files (is mffmoe installed on every node?)")
        for path in lost:
            assembler.drop(path)
            err = DecoderCrashError(f"{path}: the Ray tasks for this file failed (a crashed decoder), also when it "
                                    f"ran alone; the file is likely corrupt or hostile")
            yield Finished(path, ErrorInfo.of(err), 0.0)

