"""What the trainer tells its caller while it runs. Kept apart from the trainer (and from torch) so a
progress display can subclass it without importing the training stack."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Observer:
    """Hooks for progress display. Every method does nothing here: subclass and override what you show."""

    def on_prepare(self, what: str, done: int, total: int) -> None:
        pass

    def on_epoch_start(self, epoch: int, epochs: int, step: int, steps: int) -> None:
        pass

    def on_step(self, epoch: int, step: int, steps: int, losses: Sequence[float], lr: float) -> None:
        pass

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        pass

    def on_warning(self, message: str) -> None:
        pass
