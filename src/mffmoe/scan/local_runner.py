"""One machine: decoding on worker processes, inference batched across files in this process.

Each worker has its own task and result pipes (no shared queue lock a dying worker could take with it),
so when a decoder crashes on a hostile file we know which file it was: that file becomes an error row,
the worker is replaced, and the scan goes on. A reader thread drains the result pipes into a bounded
queue, which is the backpressure: workers block once enough decoded frames wait for the model.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from mffmoe.errors import DecoderCrashError, ErrorInfo
from mffmoe.inference.detector import Detector
from mffmoe.scan.assemble import Assembler, Finished, score_parts
from mffmoe.scan.decode import DecodeConfig, Part, decode_file
from mffmoe.scan.sources import HashedInput, hash_inputs

DecodeFn = Callable[[str, DecodeConfig], Iterable[Part]]
_PREFETCH = 2  # tasks queued per worker, so it never waits for the next file


def default_workers() -> int:
    """Leave a core to the model; decoding rarely needs more than a few."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _worker_main(tasks: Connection, results: Connection, cfg: DecodeConfig, decode: DecodeFn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    while True:
        try:
            path = tasks.recv()
        except EOFError:
            break
        if path is None:
            break
        for part in decode(path, cfg):
            results.send(("part", part))
        results.send(("done", path))
    results.close()


@dataclass
class _Worker:
    wid: int
    proc: mp.process.BaseProcess
    tasks: Connection
    results: Connection
    outstanding: deque = field(default_factory=deque)


class LocalRunner:
    name = "local"

    def __init__(self, detector: Detector, cfg: DecodeConfig, workers: int | None = None,
                 hash_threads: int = 8, decode: DecodeFn = decode_file, queue_parts: int | None = None) -> None:
        self.detector = detector
        self.cfg = cfg
        self.n_workers = workers or default_workers()
        self.hash_threads = hash_threads
        self.decode = decode
        self.queue_parts = queue_parts or 4 * detector.batch_size
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(["mffmoe.scan.decode"])  # PyAV, Pillow imported once
        self._workers: dict[int, _Worker] = {}
        self._lock = threading.Lock()
        self._next_id = 0

    def __enter__(self) -> LocalRunner:
        # Start the fork server now: it imports PyAV and Pillow while the inputs are being hashed.
        from multiprocessing import forkserver

        forkserver.ensure_running()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def describe(self) -> str:
        return f"local: {self.n_workers} decode worker(s), inference in-process on {self.detector.engine.device}"

    def hash(self, paths: list[str]) -> Iterator[HashedInput]:
        return hash_inputs(paths, self.hash_threads)

    # -- workers -----------------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        task_r, task_w = self._ctx.Pipe(duplex=False)
        res_r, res_w = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(target=_worker_main, args=(task_r, res_w, self.cfg, self.decode),
                                 name=f"mffmoe-scan-decode-{self._next_id}", daemon=True)
        proc.start()
        task_r.close()
        res_w.close()
        worker = _Worker(self._next_id, proc, task_w, res_r)
        self._next_id += 1
        with self._lock:
            self._workers[worker.wid] = worker
        return worker

    def _read(self, out: queue.Queue, stop: threading.Event) -> None:
        """Reader thread: worker messages -> `out`, in order per worker; a death is reported after the
        dead worker's last message, so the file it died on is the one it had not finished."""
        def put(item: tuple[Any, ...]) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        while not stop.is_set():
            with self._lock:
                workers = list(self._workers.values())
            if not workers:
                time.sleep(0.05)
                continue
            ready = wait([w.results for w in workers] + [w.proc.sentinel for w in workers], timeout=0.2)
            for w in workers:
                dead = w.proc.sentinel in ready
                if w.results in ready:
                    try:
                        msg = w.results.recv()
                    except (EOFError, OSError):
                        dead = True
                    else:
                        if not put((w.wid, *msg)):
                            return
                if not dead:
                    continue
                while True:  # what it sent before dying comes first
                    try:
                        if not w.results.poll():
                            break
                        msg = w.results.recv()
                    except (EOFError, OSError):
                        break
                    if not put((w.wid, *msg)):
                        return
                w.proc.join(timeout=1.0)
                with self._lock:
                    self._workers.pop(w.wid, None)
                w.results.close()
                if not put((w.wid, "dead", w.proc.exitcode)):
                    return

    def _shutdown(self, stop: threading.Event, reader: threading.Thread, abort: bool) -> None:
        """Stop the workers: politely after a complete run, at once after an interruption (a worker may be
        blocked sending frames nobody will read)."""
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for w in workers:
            if abort:
                w.proc.terminate()
                continue
            with suppress(BrokenPipeError, OSError):
                w.tasks.send(None)
        deadline = time.monotonic() + 5.0
        for w in workers:
            w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join(timeout=2.0)
        stop.set()
        reader.join(timeout=5.0)
        for w in workers:
            w.tasks.close()
            w.results.close()

    # -- the scan ----------------------------------------------------------------------------------
    def run(self, todo: list[str]) -> Generator[Finished, None, None]:
        if not todo:
            return
        assembler = Assembler.for_detector(self.detector, self.cfg.crop)
        pending = deque(todo)
        out: queue.Queue = queue.Queue(maxsize=self.queue_parts)
        stop = threading.Event()
        for _ in range(min(self.n_workers, len(todo))):
            self._spawn()
        reader = threading.Thread(target=self._read, args=(out, stop), name="mffmoe-scan-reader", daemon=True)
        reader.start()
        batch: list[Part] = []
        owners: dict[int, _Worker] = {}

        def dispatch() -> None:
            for w in list(owners.values()):
                while pending and len(w.outstanding) < _PREFETCH:
                    path = pending.popleft()
                    try:
                        w.tasks.send(path)
                    except (BrokenPipeError, OSError):  # it died; its "dead" message is on the way
                        pending.appendleft(path)
                        break
                    w.outstanding.append(path)

        def score() -> Iterator[Finished]:
            done = list(batch)
            batch.clear()
            for part in score_parts(self.detector, done):
                yield from assembler.add(part)

        complete = False
        try:
            with self._lock:
                owners.update(self._workers)
            dispatch()
            while pending or any(w.outstanding for w in owners.values()) or batch:
                try:
                    wid, kind, payload = out.get(timeout=0.05 if batch else 1.0)
                except queue.Empty:
                    if batch:
                        yield from score()
                    elif not reader.is_alive():
                        raise RuntimeError("the scan's reader thread stopped unexpectedly") from None
                    continue
                if kind == "part":
                    if payload.pixels is not None:
                        batch.append(payload)
                        if sum(p.inputs for p in batch) >= self.detector.batch_size:
                            yield from score()
                    else:
                        yield from assembler.add(payload)
                elif kind == "done":
                    owners[wid].outstanding.remove(payload)
                    dispatch()
                elif kind == "dead" and wid in owners:
                    worker = owners.pop(wid)
                    if worker.outstanding:
                        path = worker.outstanding.popleft()
                        assembler.drop(path)
                        batch[:] = [p for p in batch if p.key != path]
                        pending.extendleft(reversed(worker.outstanding))
                        err = DecoderCrashError(f"{path}: the decoding process died on this file (exit code "
                                                f"{payload}); the file is likely corrupt or hostile")
                        yield Finished(path, ErrorInfo.of(err), 0.0)
                    if pending:
                        new = self._spawn()
                        owners[new.wid] = new
                    dispatch()
            if assembler.open_files:  # every part of a file precedes its "done": this cannot happen
                raise RuntimeError(f"internal error: unfinished files {assembler.open_files[:3]}")
            complete = True
        finally:
            self._shutdown(stop, reader, abort=not complete)
