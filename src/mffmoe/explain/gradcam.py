"""Grad-CAM (captum's `LayerGradCam`) of each expert on its last feature stage.

Target: the fake class's log-odds, logit(fake) - logit(real), which is what P(fake) =
softmax(logits)[fake] = sigmoid(logit(fake) - logit(real)) moves with; positive parts only (ReLU), as
Grad-CAM defines it. The layer is the one whose output the classifier pools: EfficientNet's `bn2` (after
`conv_head`, activation included), ConvNeXt's last stage.

Cost: captum marks the layer's output as needing a gradient (its forward hook), and the model's
parameters need none, so autograd records only the head (pooling, norm, linear) and the backward runs
through that alone: one explanation costs about one forward pass of the torch model.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import torch
from torch import nn

from mffmoe.errors import ConfigError, MissingExtraError
from mffmoe.model.ensemble import MFFMoE
from mffmoe.model.experts import Expert


def last_stage(net: nn.Module) -> nn.Module:
    """The module whose output the classifier head pools (the last feature stage)."""
    if hasattr(net, "conv_head") and hasattr(net, "bn2"):  # timm EfficientNet: conv_head -> bn2 (+act)
        return cast(nn.Module, net.bn2)
    stages = getattr(net, "stages", None)
    if isinstance(stages, nn.Sequential) and len(stages) > 0:  # timm ConvNeXt (norm_pre is Identity)
        return cast(nn.Module, stages[-1])
    raise ConfigError(f"no known last feature stage in {type(net).__name__}: Grad-CAM supports the "
                      f"EfficientNet and ConvNeXt experts; use the occlusion method")


class GradCAM:
    """Per-expert Grad-CAM maps at the model's input size, and the experts' P(fake) of the same pass."""

    name = "gradcam"

    def __init__(self, model: MFFMoE) -> None:
        try:
            from captum import attr
        except ImportError as e:
            raise MissingExtraError(f"Grad-CAM explanations need captum, which is not installed ({e}): "
                                    f"pip install 'mffmoe[explain]', or use the occlusion method") from e
        self.model = model.eval().requires_grad_(False)
        self.experts = [cast(Expert, e) for e in model.experts]
        self.layers = [last_stage(e.baseline_extractor) for e in self.experts]
        self._cams = [attr.LayerGradCam(self._log_odds(i), layer) for i, layer in enumerate(self.layers)]
        self._probs: dict[int, torch.Tensor] = {}

    def _log_odds(self, i: int) -> Callable[[torch.Tensor], torch.Tensor]:
        expert = self.experts[i]

        def forward(x: torch.Tensor) -> torch.Tensor:
            logits = expert(x)
            self._probs[i] = torch.softmax(logits.detach(), dim=1)[:, 1]
            return logits[:, 1] - logits[:, 0]
        return forward

    def maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N, 3, S, S] normalised float32 -> (maps [N, E, S, S] float32, >= 0; P(fake) [N, E])."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ConfigError(f"expected a [N, 3, S, S] batch, got shape {batch.shape}")
        size = batch.shape[-2:]
        device = next(self.model.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
        maps = np.zeros((batch.shape[0], len(self.experts), *size), dtype=np.float32)
        probs = np.zeros((batch.shape[0], len(self.experts)), dtype=np.float64)
        for i, cam in enumerate(self._cams):
            attributions = cam.attribute(x, relu_attributions=True).detach()
            up = torch.nn.functional.interpolate(attributions.float(), size=size, mode="bilinear",
                                                 align_corners=False)
            maps[:, i] = up[:, 0].cpu().numpy()
            probs[:, i] = self._probs.pop(i).double().cpu().numpy()
        return maps, probs
