"""Grad-CAM (captum's `LayerGradCam`) of each expert on its last feature stage.

Target: the fake class's log-odds, logit(fake) - logit(real), which is what P(fake) =
softmax(logits)[fake] = sigmoid(logit(fake) - logit(real)) moves with; positive parts only (ReLU), as
Grad-CAM defines it. The layer is the one whose output the classifier pools: EfficientNet's `bn2` (after
`conv_head`, activation included), ConvNeXt's last stage.

Placement: a feature cell is not centred on its nominal 32 x 32 square of the input. A strided
convolution's output j sits at input s*j - padding_left + (k - 1) * dilation / 2, so EfficientNet's
padded 3x3 stride-2 convolutions put cell j at input pixel 32*j (half a cell up and left of the square's
centre), ConvNeXt's unpadded patchify layers at 32*j + 15.5. `CellGrid` records, per expert, where its
cells sit, measured from the convolutions that ran in the first explained forward pass (their input and
output sizes give "same" padding's real left pad too), so the map is placed where its evidence is.

Cost: captum marks the layer's output as needing a gradient (its forward hook), and the model's
parameters need none, so autograd records only the head (pooling, norm, linear) and the backward runs
through that alone: one explanation costs about one forward pass of the torch model.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import nn

from mffmoe.engine.costs import roster_gflops
from mffmoe.engine.scheduler import plan_threads
from mffmoe.errors import ConfigError, MissingExtraError
from mffmoe.explain.cells import conv_grid
from mffmoe.explain.placement import CellGrid
from mffmoe.model.ensemble import MFFMoE
from mffmoe.model.experts import Expert

if TYPE_CHECKING:
    from mffmoe.explain.features import FeatureGraphs


def last_stage(net: nn.Module) -> nn.Module:
    """The module whose output the classifier head pools (the last feature stage)."""
    head = getattr(net, "bn2", None)
    if hasattr(net, "conv_head") and isinstance(head, nn.Module):  # timm EfficientNet: conv_head -> bn2 (+act)
        return head
    stages = getattr(net, "stages", None)
    if isinstance(stages, nn.Sequential) and len(stages) > 0:  # timm ConvNeXt (norm_pre is Identity)
        last: nn.Module = stages[-1]
        return last
    raise ConfigError(f"no known last feature stage in {type(net).__name__}: Grad-CAM supports the "
                      f"EfficientNet and ConvNeXt experts; use the occlusion method")


#: The submodules timm's `forward_head` uses (EfficientNet: global_pool, classifier; ConvNeXt: head).
HEAD_MODULES = ("global_pool", "classifier", "head", "fc_norm", "head_drop")


def head_only(net: nn.Module) -> nn.Module:
    """A shallow copy of `net` that keeps only its head's submodules, so `forward_head` works while the
    backbone's weights can be freed (Grad-CAM on OpenVINO features runs only the heads in torch)."""
    head = copy.copy(net)
    head._modules = {k: m for k, m in net._modules.items() if k in HEAD_MODULES}
    return head


class GradCAM:
    """Per-expert Grad-CAM maps at the model's input size, and the experts' P(fake) of the same pass."""

    name = "gradcam"

    def __init__(self, model: MFFMoE, workers: int | None = None, features: FeatureGraphs | None = None) -> None:
        try:
            from captum import attr
        except ImportError as e:
            raise MissingExtraError(f"Grad-CAM explanations need captum, which is not installed ({e}): "
                                    f"pip install 'mffmoe[explain]', or use the occlusion method") from e
        self.model: MFFMoE | None = model.eval().requires_grad_(False)
        self.device = next(model.parameters()).device
        self.experts = [cast(Expert, e) for e in model.experts]
        self.n = len(self.experts)
        self.layers = [last_stage(e.baseline_extractor) for e in self.experts]
        self._nets = [e.baseline_extractor for e in self.experts]
        #: With OpenVINO feature graphs, the stage's activations come from them and captum differentiates
        #: the torch head alone, tapped at its input (`features.py`).
        self.features = features
        self._taps = [nn.Identity() for _ in self.experts]
        if features is None:
            self._cams = [attr.LayerGradCam(self._log_odds(i), layer) for i, layer in enumerate(self.layers)]
        else:
            self._nets = [head_only(net) for net in self._nets]
            self._cams = [attr.LayerGradCam(self._head_log_odds(i), tap) for i, tap in enumerate(self._taps)]
        self._probs: dict[int, torch.Tensor] = {}
        #: per expert, where its cells sit in the input (measured on the first pass)
        self.grids: list[CellGrid | None] = [None] * len(self.experts)
        # experts in parallel, one per core on the CPU, the longest first (as the engines' scheduler)
        cpu = self.device.type == "cpu"
        self.workers, self.threads = plan_threads(len(self.experts), workers) if cpu else (1, torch.get_num_threads())
        costs = roster_gflops(model.roster, model.input_size)
        self._order = sorted(range(len(self.experts)), key=lambda i: -costs[i])
        self._channels_last = [any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
                                   and not p.is_contiguous() for p in e.parameters()) for e in self.experts]
        if features is not None:  # only the heads run in torch: let the backbones' weights go
            self.model, self.experts, self.layers = None, [], []

    def _log_odds(self, i: int) -> Callable[[torch.Tensor], torch.Tensor]:
        expert = self.experts[i]

        def forward(x: torch.Tensor) -> torch.Tensor:
            logits = expert(x)
            self._probs[i] = torch.softmax(logits.detach(), dim=1)[:, 1]
            return logits[:, 1] - logits[:, 0]
        return forward

    def _head_log_odds(self, i: int) -> Callable[[torch.Tensor], torch.Tensor]:
        net, tap = self._nets[i], self._taps[i]

        def forward(features: torch.Tensor) -> torch.Tensor:
            logits = net.forward_head(tap(features))  # type: ignore[operator]
            self._probs[i] = torch.softmax(logits.detach(), dim=1)[:, 1]
            return logits[:, 1] - logits[:, 0]
        return forward

    def _attribute(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Expert `i`'s Grad-CAM [N, 1, h, w]; the first time, its cell grid is measured on the way."""
        if self.grids[i] is not None:
            return self._cams[i].attribute(x, relu_attributions=True)
        convs: list[tuple[nn.Conv2d, int, int]] = []  # (conv, input width, output width), in order run
        done = [False]

        def on_conv(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if not done[0] and isinstance(module, nn.Conv2d) and args and args[0].ndim == 4:
                convs.append((module, int(args[0].shape[-1]), int(output.shape[-1])))

        def on_layer(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            done[0] = True
        net = self.experts[i].baseline_extractor
        hooks = [m.register_forward_hook(on_conv) for m in net.modules() if isinstance(m, nn.Conv2d)]
        hooks.append(self.layers[i].register_forward_hook(on_layer))
        try:
            out = self._cams[i].attribute(x, relu_attributions=True)
        finally:
            for h in hooks:
                h.remove()
        self.grids[i] = conv_grid(convs)
        return out

    def maps(self, batch: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """[N, 3, S, S] normalised float32 -> (per expert [N, h, w] float32 maps at the stage's own
        resolution, >= 0; P(fake) [N, E])."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ConfigError(f"expected a [N, 3, S, S] batch, got shape {batch.shape}")
        device = self.device
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
        maps: list[np.ndarray | None] = [None] * self.n
        probs = np.zeros((batch.shape[0], self.n), dtype=np.float64)

        features = self.features

        def one(i: int) -> None:
            if features is not None:
                attributions = self._cams[i].attribute(torch.from_numpy(features.run(i, batch)),
                                                       relu_attributions=True).detach()
            else:
                xi = x.contiguous(memory_format=torch.channels_last) if self._channels_last[i] else x
                attributions = self._attribute(i, xi).detach()
            maps[i] = attributions[:, 0].float().cpu().numpy()
            probs[:, i] = self._probs.pop(i).double().cpu().numpy()

        before = torch.get_num_threads()
        if device.type == "cpu" and before != self.threads:
            torch.set_num_threads(self.threads)
        try:
            if self.workers == 1:
                for i in self._order:
                    one(i)
            else:
                with ThreadPoolExecutor(self.workers, thread_name_prefix="mffmoe-gradcam") as pool:
                    for f in [pool.submit(one, i) for i in self._order]:
                        f.result()
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)
        return [m for m in maps if m is not None], probs

    def cell_grids(self) -> list[CellGrid]:
        """Where each expert's cells sit (known once `maps` has run)."""
        if self.features is not None:
            return list(self.features.grids)
        if any(g is None for g in self.grids):
            raise ConfigError("cell grids are measured by the first maps() call")
        return [g for g in self.grids if g is not None]
