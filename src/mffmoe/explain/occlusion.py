"""Occlusion, the gradient-free method: hide one square of the input at a time and see how much each
expert's P(fake) falls. It needs only `engine.predict` (numpy in, scores out), so it explains every
engine, the exported OpenVINO and onnxruntime graphs included, and needs no torch.

The input (S x S) is cut into `grid` x `grid` cells; a window of `window` x `window` cells slides one
cell at a time, and is filled with 0 in normalised units, i.e. the ImageNet mean colour (a flat grey,
which carries no texture). A cell's value for an expert is the mean fall of that expert's P(fake)
(clipped at 0) over the windows covering it. All occluded inputs go through the engine in batches, with
the unoccluded input in the first batch, so the baseline is measured in the same run. Cost: (grid -
window + 1)^2 + 1 inputs per explained input (default 26, i.e. 26 ensemble passes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mffmoe.engine.base import Engine
from mffmoe.errors import ConfigError

DEFAULT_GRID = 6
DEFAULT_WINDOW = 2


@dataclass(frozen=True)
class Occlusion:
    """Occlusion maps through `engine`, `batch_size` inputs per engine call."""
    engine: Engine
    grid: int = DEFAULT_GRID
    window: int = DEFAULT_WINDOW
    batch_size: int = 8

    name = "occlusion"

    def __post_init__(self) -> None:
        if self.grid < 1 or not 1 <= self.window <= self.grid or self.batch_size < 1:
            raise ConfigError(f"occlusion needs 1 <= window <= grid and batch_size >= 1 (grid {self.grid}, "
                              f"window {self.window}, batch size {self.batch_size})")

    @property
    def positions(self) -> int:
        """Occluded inputs per explained input."""
        return (self.grid - self.window + 1) ** 2

    def _edges(self, size: int) -> np.ndarray:
        return np.round(np.linspace(0, size, self.grid + 1)).astype(int)

    def maps(self, batch: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """[N, 3, S, S] normalised float32 -> (per expert [N, grid, grid] float32 maps, >= 0; P(fake)
        [N, E])."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ConfigError(f"expected a [N, 3, S, S] batch, got shape {batch.shape}")
        n, _, height, width = batch.shape
        ys, xs = self._edges(height), self._edges(width)
        steps = self.grid - self.window + 1
        spots = [(r, c) for r in range(steps) for c in range(steps)]
        n_experts = len(self.engine.roster)
        maps = np.zeros((n_experts, n, self.grid, self.grid), dtype=np.float32)
        probs = np.zeros((n, n_experts), dtype=np.float64)
        for k in range(n):
            image = np.asarray(batch[k], dtype=np.float32)
            scores = self._scores(image, spots, ys, xs)  # [1 + positions, E]
            base, falls = scores[0], np.clip(scores[0][None, :] - scores[1:], 0.0, None)
            cells = np.zeros((self.grid, self.grid, n_experts))
            cover = np.zeros((self.grid, self.grid, 1))
            for (r, c), fall in zip(spots, falls, strict=True):
                cells[r:r + self.window, c:c + self.window] += fall
                cover[r:r + self.window, c:c + self.window] += 1
            cells /= np.maximum(cover, 1)
            maps[:, k] = np.moveaxis(cells, -1, 0)
            probs[k] = base
        return list(maps), probs

    def _scores(self, image: np.ndarray, spots: list[tuple[int, int]], ys: np.ndarray,
                xs: np.ndarray) -> np.ndarray:
        """P(fake) [1 + len(spots), E]: the input, then the input occluded at each spot."""
        out: list[np.ndarray] = []
        todo: list[tuple[int, int] | None] = [None, *spots]
        for start in range(0, len(todo), self.batch_size):
            part = todo[start:start + self.batch_size]
            inputs = np.repeat(image[None], len(part), axis=0)
            for j, spot in enumerate(part):
                if spot is not None:
                    r, c = spot
                    inputs[j, :, ys[r]:ys[r + self.window], xs[c]:xs[c + self.window]] = 0.0
            out.append(np.asarray(self.engine.predict(inputs), dtype=np.float64))
        return np.concatenate(out)
