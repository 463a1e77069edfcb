"""Shared fixtures: random checkpoints in the official formats and generated media."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mffmoe.testing.checkpoints import TINY_ROSTER, make_random_checkpoint
from mffmoe.testing.media import make_image, make_video

TINY_SIZE = 64

# `--engine auto` prepares OpenVINO graphs on the first use of real weights (engine/prepare.py: about 15 s
# for a tiny roster). The suite's many throw-away checkpoints would each pay that, so it is off here (and
# in the CLI's subprocesses, which inherit it); tests/test_prepare.py turns it on to test it.
os.environ.setdefault("MFFMOE_BUILD", "0")

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """Tiny roster, official layout (MFF-MoE-v1.pth + .state), EMA != raw, non-default BN stats."""
    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt_official"), TINY_ROSTER, TINY_SIZE, "official")


@pytest.fixture(scope="session")
def tiny_ckpt_upstream(tmp_path_factory) -> Path:
    """Same seed, upstream layout (weight.pth + ema.state, keys without `experts.`)."""
    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt_upstream"), TINY_ROSTER, TINY_SIZE, "upstream")


@pytest.fixture(scope="session")
def tiny_detector(tiny_ckpt):
    from mffmoe.inference.detector import Detector
    return Detector.from_dir(tiny_ckpt, device="cpu", batch_size=4, crop="frame")  # the spec's path


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """A small set of generated media shared by tests (read-only)."""
    d = tmp_path_factory.mktemp("media")
    return {
        "jpg": make_image(d / "photo.jpg", 320, 200, seed=1, quality=90),
        "png": make_image(d / "graphic.png", 150, 260, seed=2),
        "mp4": make_video(d / "clip.mp4", seconds=2.0, fps=25, width=160, height=120, codec="libx264"),
        "text": _write(d / "notes.txt", b"just some text, not media\n" * 10),
        "empty": _write(d / "empty.jpg", b""),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
