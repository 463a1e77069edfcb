"""Settings as data: the default roster, the spec's constants, and the host's `MFFMoEV1Config`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

#: The spec's seven experts, in checkpoint order (`experts.0` ... `experts.6`).
DEFAULT_ROSTER: tuple[str, ...] = (
    "convnextv2_tiny.fcmae_ft_in1k",
    "convnextv2_tiny.fcmae_ft_in1k",
    "tf_efficientnet_b4.ns_jft_in1k",
    "tf_efficientnet_b4.ns_jft_in1k",
    "tf_efficientnet_b5.ns_jft_in1k",
    "tf_efficientnet_b5.ns_jft_in1k",
    "tf_efficientnet_b6.ns_jft_in1k",
)
DEFAULT_INPUT_SIZE = 512
DEFAULT_THRESHOLD = 0.5
DEFAULT_FRAMES = 100
EMA_DECAY = 0.995
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODEL_NAME = "MFF-MOE-V1"

#: Where weights are looked for when neither --weights nor MFFMOE_WEIGHTS is given.
DEFAULT_WEIGHTS_DIR = Path("models/MFF-MoE-V1")
WEIGHTS_ENV = "MFFMOE_WEIGHTS"


def resolve_weights_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`explicit` > $MFFMOE_WEIGHTS > ./models/MFF-MoE-V1 (existence is checked by the loader)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env)
    return DEFAULT_WEIGHTS_DIR


class MFFMoEV1Config(BaseModel):
    """The host's detector configuration, accepted as written in the spec's integration example."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    class_name: str = "MFFMoEDetectorV1"
    model_name: str = MODEL_NAME
    model_path: str = str(DEFAULT_WEIGHTS_DIR) + "/"
    isImage: bool = True
    isVideo: bool = True
    isAudio: bool = False
    video_frames_to_sample: int = Field(DEFAULT_FRAMES, ge=1)
    # Our additions; defaults keep the host's behaviour.
    device: str = "auto"
    engine: str = "torch"
    batch_size: int = Field(16, ge=1)
    threshold: float = Field(DEFAULT_THRESHOLD, ge=0.0, le=1.0)
    pooling: str = "mean"
    allow_missing_ema: bool = False
    untrained: bool = False
    max_image_pixels: Optional[int] = None
