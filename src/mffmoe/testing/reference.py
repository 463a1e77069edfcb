"""The spec's algorithm, written the way its host runs it. Kept only as ground truth for tests and
benchmarks: per-forward EMA swapping, batch of 1, torchvision transforms, whole checkpoint files in
memory, videos decoded sequentially. Never used for serving.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mffmoe.config import DEFAULT_INPUT_SIZE, DEFAULT_ROSTER
from mffmoe.media.preprocess import spec_transform
from mffmoe.model.ema import ExponentialMovingAverage


class RefExpert(nn.Module):
    """MFF_Expert_Convnext / MFF_Expert_EffB* from the spec (forward_features -> pool -> head)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.baseline_extractor = timm.create_model(name, pretrained=False, num_classes=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m: Any = self.baseline_extractor  # a timm model: its heads differ by family
        x = m.forward_features(x)
        if hasattr(m, "classifier"):  # EfficientNet
            x = m.global_pool(x)
            if m.drop_rate > 0.0:
                x = F.dropout(x, p=m.drop_rate, training=m.training)
            feat = x
            return m.classifier(x), feat
        feat = m.head.global_pool(x)[:, :, 0, 0]  # ConvNeXt
        return m.head(x), feat


class RefMFFMoE(nn.Module):
    def __init__(self, roster: Sequence[str] = DEFAULT_ROSTER) -> None:
        super().__init__()
        self.experts = nn.ModuleList(RefExpert(n) for n in roster)
        self.ema_list = [ExponentialMovingAverage(e.parameters(), decay=0.995) for e in self.experts]

    def forward_expert(self, x: torch.Tensor, idx: int) -> torch.Tensor:
        with self.ema_list[idx].average_parameters():
            logits, _ = self.experts[idx](x)
            return F.softmax(logits, dim=1)[:, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.forward_expert(x, i) for i in range(len(self.experts))], dim=1).mean(dim=1)

    def load(self, path: str | os.PathLike[str], weights: str = "MFF-MoE-v1.pth",
             ema: str = "MFF-MoE-v1.state") -> RefMFFMoE:
        state = torch.load(Path(path) / weights, map_location="cpu", weights_only=True)
        state = {k if k.startswith("experts.") else "experts." + k: v for k, v in state.items()
                 if not k.startswith(("ema_list", "ema_state"))}
        self.load_state_dict(state, strict=True)
        ema_state = torch.load(Path(path) / ema, map_location="cpu", weights_only=True)
        for idx in range(len(self.experts)):
            self.ema_list[idx].load_state_dict(ema_state[idx])
        return self


class ReferenceDetector:
    def __init__(self, path: str | os.PathLike[str], roster: Sequence[str] = DEFAULT_ROSTER,
                 input_size: int = DEFAULT_INPUT_SIZE, layout: str = "official") -> None:
        files = ("MFF-MoE-v1.pth", "MFF-MoE-v1.state") if layout == "official" else ("weight.pth", "ema.state")
        self.model = RefMFFMoE(roster).load(path, *files).eval()
        self.transform = spec_transform(input_size)

    def score_image(self, image: Image.Image) -> float:
        x = self.transform(image.convert("RGB")).unsqueeze(0)
        with torch.no_grad():
            return self.model(x).item()

    def score_file(self, path: str | os.PathLike[str]) -> float:
        return self.score_image(Image.open(path))

    def score_video(self, path: str | os.PathLike[str], n_frames: int = 100) -> tuple[float, list[float]]:
        import av
        with av.open(str(path)) as c:
            total = c.streams.video[0].frames
            wanted = set(int(i) for i in np.linspace(0, total - 1, min(total, n_frames), dtype=int))
            scores = [self.score_image(frame.to_image()) for i, frame in enumerate(c.decode(video=0))
                      if i in wanted]
        return float(np.mean(scores)), scores
