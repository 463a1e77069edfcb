"""Where a feature stage's cells sit in the model input, from the convolutions that made it.

A strided convolution's output j sits at input s*j - padding_left + (k - 1) * dilation / 2 (its window's
centre), so a chain of them puts cell j of the last stage at input pixel step * j + offset: EfficientNet's
padded 3x3 stride-2 convolutions at 32 j (half a cell up and left of the nominal square's centre),
ConvNeXt's unpadded patchify layers at 32 j + 15.5. Maps are interpolated between these true centres.
"""
from __future__ import annotations

import torch
from torch import nn

from mffmoe.explain.placement import CellGrid


def measure_grid(net: nn.Module, x: torch.Tensor) -> CellGrid:
    """The cell grid of `net`'s last stage for inputs like `x`, from one forward pass (no gradients)."""
    convs: list[tuple[nn.Conv2d, int, int]] = []

    def on_conv(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d) and args and args[0].ndim == 4:
            convs.append((module, int(args[0].shape[-1]), int(output.shape[-1])))
    hooks = [m.register_forward_hook(on_conv) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            net.forward_features(x)  # type: ignore[operator]
    finally:
        for h in hooks:
            h.remove()
    return conv_grid(convs)


def conv_grid(convs: list[tuple[nn.Conv2d, int, int]]) -> CellGrid:
    """The composite placement of a chain of convolutions (order run): cell j of the last output sits at
    input pixel step * j + offset. Branches that do not stride or shift (depthwise, 1x1, squeeze-excite)
    add nothing, so running them all is fine for the EfficientNet and ConvNeXt families."""
    step, offset = 1.0, 0.0
    for conv, n_in, n_out in convs:
        k, s, d = conv.kernel_size[-1], conv.stride[-1], conv.dilation[-1]
        if type(conv).__name__ == "Conv2dSame" or conv.padding == "same":  # padded at run time (TF style)
            left = max((n_out - 1) * s + (k - 1) * d + 1 - n_in, 0) // 2
        else:
            pad = conv.padding
            left = int(pad[-1]) if isinstance(pad, tuple) else 0
        shift = -left + (k - 1) * d / 2
        offset += step * shift
        step *= s
    return CellGrid(step, offset)
