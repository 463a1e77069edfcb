"""Random checkpoints in the exact official formats, for tests, benchmarks and demos.

The official weights cannot be downloaded here, so we make stand-ins that would expose any loader
shortcut: EMA shadows differ from the raw parameters, BatchNorm statistics are not the defaults, and
the `.pth` carries `ema_list*`/`ema_state*` keys that must be ignored.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mffmoe.config import DEFAULT_INPUT_SIZE, DEFAULT_ROSTER
from mffmoe.media.samples import natural_batch
from mffmoe.model.checkpoint import save_official
from mffmoe.model.ema import ExponentialMovingAverage
from mffmoe.model.ensemble import build_model

#: Small rosters for fast tests (timm test models and small real ones).
TINY_ROSTER = ("test_efficientnet", "test_convnext")
#: First `media.samples` seed of the BatchNorm images (the int8 calibration set starts at 10_000 and
#: benchmarks evaluate on seeds from 0, so no image is in two of them).
BN_SEED = 20_000


def make_random_checkpoint(directory: str | os.PathLike[str], roster: Sequence[str] = TINY_ROSTER,
                           input_size: int = DEFAULT_INPUT_SIZE, layout: str = "official", seed: int = 0,
                           ema_scale: float = 0.05, with_ema: bool = True, measured_bn: bool = False,
                           bn_images: int = 16) -> Path:
    """Write a random ensemble in `layout` ("official" or "upstream") with distinct EMA shadows. BatchNorm
    statistics are random (but not the defaults), or with `measured_bn` measured on `bn_images`
    natural-looking images (`media.samples.natural_batch`: smooth frames and dead leaves), as a trained
    network's are: activations then stay in the range real images give, photographs included, where an
    engine computing a wrong graph shows it (random statistics let some experts saturate at 0 or 1, which
    hides differences)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(roster, input_size)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(int(torch.randint(1, 10_000, (1,), generator=g)))
    emas = None
    if with_ema:
        emas = []
        for expert in model.experts:
            ema = ExponentialMovingAverage(expert.parameters(), decay=0.995)
            for s in ema.shadow_params:
                s.add_(torch.randn(s.shape, generator=g) * ema_scale * (s.std() if s.numel() > 1 else 1.0))
            ema.num_updates = int(torch.randint(100, 100_000, (1,), generator=g))
            emas.append(ema)
    if measured_bn:
        # measured with the weights inference runs (the EMA shadows, 5% off the raw parameters), as a
        # trained network's statistics are measured with its own weights
        with contextlib.ExitStack() as stack:
            for expert, ema in zip(model.experts, emas or [], strict=False):
                stack.enter_context(ema.average_parameters(expert.parameters()))
            measure_batchnorm(model, input_size, n=bn_images, seed=BN_SEED + seed)
    extra = {"ema_list.0.junk": torch.zeros(1), "ema_state_dummy": torch.ones(2)}
    return save_official(model, emas, directory, layout=layout, extra_state=extra)


def measure_batchnorm(model: torch.nn.Module, input_size: int, n: int = 16, seed: int = 0) -> None:
    """Set every BatchNorm's running statistics to their exact averages over `n` natural-looking images.

    Smooth frames alone are not enough: photographs' texture then drives a random EfficientNet's
    activations up layer by layer (logits of 1e2-1e5 instead of 1-8; `media.samples` says more)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    images = natural_batch(n, input_size, seed=seed)
    model.train()
    with torch.no_grad():
        for chunk in torch.from_numpy(images).split(8):
            model(chunk)
    for m in norms:
        m.momentum = 0.1
    model.eval()


def default_roster_checkpoint(directory: str | os.PathLike[str], input_size: int = DEFAULT_INPUT_SIZE,
                              layout: str = "official", seed: int = 0) -> Path:
    """The full seven-expert roster (~760 MB per file) with random weights."""
    return make_random_checkpoint(directory, DEFAULT_ROSTER, input_size, layout, seed)
