"""The MFF-MoE ensemble: a roster of experts whose P(fake) are averaged."""
from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from mffmoe.config import DEFAULT_INPUT_SIZE, DEFAULT_ROSTER
from mffmoe.model.experts import Expert, build_expert


class MFFMoE(nn.Module):
    """`forward` returns per-expert P(fake) [B, E]; the ensemble score is their mean, taken in one place
    (`mffmoe.inference.assemble.ensemble_score`), where the engines' float64 scores arrive."""

    def __init__(self, roster: Sequence[str] = DEFAULT_ROSTER, input_size: int = DEFAULT_INPUT_SIZE) -> None:
        super().__init__()
        if not roster:
            raise ValueError("a roster needs at least one expert")
        self.roster = tuple(roster)
        self.input_size = int(input_size)
        self.experts = nn.ModuleList(build_expert(name) for name in self.roster)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([cast(Expert, expert).probability(x) for expert in self.experts], dim=1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(roster: Sequence[str] = DEFAULT_ROSTER, input_size: int = DEFAULT_INPUT_SIZE,
                device: str | torch.device = "cpu") -> MFFMoE:
    """Build the ensemble directly on `device` ("meta" gives a storage-free skeleton for loading)."""
    with torch.device(device):
        return MFFMoE(roster, input_size)
