"""Experts: one timm backbone each, wrapped so state-dict keys match the published checkpoints
(`experts.N.baseline_extractor.<timm key>`)."""
from __future__ import annotations

import timm
import torch
from torch import nn

from mffmoe.errors import ConfigError


class Expert(nn.Module):
    """A timm classifier with 2 classes. In eval mode its forward equals the spec's
    `forward_features -> pool -> (dropout) -> head` for both the ConvNeXt and EfficientNet experts."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        # pretrained=False always: no hub downloads; the weights come from the checkpoint.
        self.baseline_extractor = timm.create_model(name, pretrained=False, num_classes=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, 2]."""
        return self.baseline_extractor(x)

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        """P(fake) [B] = softmax(logits)[:, 1]."""
        return torch.softmax(self(x), dim=1)[:, 1]


def build_expert(name: str) -> Expert:
    """The expert `name` (a timm model name; a pretrained tag such as `.ns_jft_in1k` is allowed)."""
    if not timm.is_model(name):
        raise ConfigError(f"unknown timm model {name!r}")
    return Expert(name)
