"""Weights as engines take them: the checkpoint's identity at once, its tensors only when asked for.

An engine that runs graphs exported from these weights before (OpenVINO, onnxruntime) never needs the
torch model, so the detector hands engines a `WeightsSource`: `info` is read from file names and headers
(`model.info.read_info`, no torch), `model()` loads the tensors on first call (`checkpoint.load_weights`,
strict as always) and then also gives the loaded, fuller `info`.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from mffmoe.model.info import CheckpointInfo, read_info

if TYPE_CHECKING:
    from mffmoe.model.ensemble import MFFMoE


class WeightsSource:
    """A weights directory or converted file; `model()` loads it once (thread-safe)."""

    def __init__(self, path: str | os.PathLike[str], allow_missing_ema: bool = False) -> None:
        self.path = Path(path)
        self.allow_missing_ema = allow_missing_ema
        #: The roster's names are checked against timm when the model loads (or were, when its graphs were built).
        self.info: CheckpointInfo = read_info(self.path, allow_missing_ema, check_names=False)
        self._model: MFFMoE | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, model: MFFMoE, info: CheckpointInfo) -> WeightsSource:
        """A source whose model is already in memory (tests, training, random weights)."""
        source = cls.__new__(cls)
        source.path, source.allow_missing_ema = Path(info.source), not info.ema
        source.info, source._model, source._lock = info, model, threading.Lock()
        return source

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def model(self) -> MFFMoE:
        with self._lock:
            if self._model is None:
                from mffmoe.model.checkpoint import load_weights

                self._model, self.info = load_weights(self.path, allow_missing_ema=self.allow_missing_ema)
            return self._model


def as_source(weights: WeightsSource | MFFMoE, info: CheckpointInfo) -> WeightsSource:
    return weights if isinstance(weights, WeightsSource) else WeightsSource.of(weights, info)
