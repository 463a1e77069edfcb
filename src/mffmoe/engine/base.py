"""The engine interface: a batch of preprocessed images in, per-expert P(fake) out.

Every engine runs the experts as separate networks, one `_run_expert(i, x)` each, through one
`ExpertScheduler` (`scheduler.py`); what differs between engines is how one expert runs. So the base
holds what callers rely on (the roster, the per-expert costs early exit orders by, the scheduler's
`workers`, `describe()`, `close()`) and the scheduling itself, once, in the manner of ultralytics'
`BaseBackend`; a subclass loads its networks and implements `_run_expert`.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from mffmoe.engine.costs import roster_gflops
from mffmoe.engine.scheduler import ExpertScheduler


class Engine(ABC):
    """Subclasses set `name`, call `super().__init__` and implement `_run_expert`; `_inputs` converts a
    batch once per call (the exported engines take numpy arrays)."""

    name: ClassVar[str]
    #: Why `--engine auto` picked this engine (set by the registry; None when it was asked for by name).
    auto_reason: str | None = None
    #: The largest batch worth handing this engine (None: any). An engine that runs images one at a time
    #: gains nothing from more, while callers buffer a batch of decoded inputs (3 MB each at 512 px) and
    #: decode twice as many ahead: the detector caps its batch size here.
    max_useful_batch: int | None = None
    #: The smallest batch worth handing this engine (None: any). An engine that builds each expert for the
    #: call (OpenVINO with `resident=False`) pays that on every call, so callers gather at least this many.
    min_useful_batch: int | None = None

    def __init__(self, roster: Sequence[str], input_size: int, device: str, workers: int, threads: int,
                 costs: Sequence[float] | None = None) -> None:
        self.roster = tuple(roster)
        self.input_size = int(input_size)
        self.device = device
        #: Experts run at once (the scheduler's threads), and intra-op threads for each of them.
        self.workers, self.threads = workers, threads
        #: Forward GFLOP per expert and image: the scheduler starts the longest first, early exit the cheapest.
        self.costs: list[float] = (list(costs) if costs is not None and len(costs) == len(self.roster)
                                   else roster_gflops(self.roster, self.input_size))
        self._scheduler = ExpertScheduler(self._run_expert, self.costs, workers)

    @abstractmethod
    def _run_expert(self, i: int, x: Any) -> np.ndarray:
        """P(fake) [B] of expert `i` for the batch `x` (as `_inputs` made it)."""

    def _inputs(self, batch: np.ndarray) -> Any:
        return batch

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """[B, 3, S, S] float32 (normalised; numpy, or a torch tensor for the torch engine) -> [B, E]
        float64 per-expert P(fake)."""
        return self.predict_experts(batch, range(len(self.roster)))

    def predict_experts(self, batch: np.ndarray, experts: Sequence[int]) -> np.ndarray:
        """Like `predict` for a subset of experts (columns in the order given)."""
        return self._scheduler.run(self._inputs(batch), experts)

    @contextlib.contextmanager
    def lighter(self) -> Iterator[None]:
        """A block in which the engine holds less memory, at some cost in time, for a call that needs room
        of its own beside it (a video's decoder and frames, a face detector). Scores are the same. The
        base holds nothing it could let go of; `OpenVINOEngine` compiles some experts per call instead,
        until `hold_all`."""
        yield

    @property
    def light(self) -> bool:
        """Whether an earlier `lighter()` block left the engine holding less than it could (see `hold_all`)."""
        return False

    def hold_all(self) -> None:  # noqa: B027  (a hook: engines without `lighter()` hold all already)
        """Hold everything again that `lighter()` let go of (a call that wants full speed comes next)."""

    def describe(self) -> dict[str, Any]:
        """How this engine runs, for logs and benchmark records."""
        return {"engine": self.name, "device": self.device, "workers": self.workers, "threads": self.threads}

    def close(self) -> None:
        """Release what the engine holds beyond its memory (the scheduler's threads). The engine is not
        used after this."""
        self._scheduler.close()
