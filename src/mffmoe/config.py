"""Settings as data: the spec's constants, `DetectorConfig` (which detector, with which options), the
environment (`Settings`, every `MFFMOE_*` variable read in one place) and the host's `MFFMoEV1Config`.

Every entry point (the library, the host adapter, the CLI, the server, scans, evaluation) builds its
detector from a `DetectorConfig` through `Detector.from_config`, so defaults live here only.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_cache_path, user_state_path
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mffmoe.errors import ConfigError

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
DEFAULT_BATCH_SIZE = 16
DEFAULT_POOLING = "mean"
DEFAULT_CROP = "auto"            # the CLI's, scans' and the web page's; the host's endpoint keeps "frame"
DEFAULT_FACE_MARGIN = 1.3        # the DFDC 2020 winner's 30% (faces/crops.py says why)
DEFAULT_MIN_FACE = 32
DEFAULT_MAX_FACES = 8
DEFAULT_FACE_DETECTOR = "blazeface"
#: The face settings a DetectorConfig may leave to the weights' manifest, and their defaults without one.
FACE_DEFAULTS: dict[str, Any] = {"face_margin": DEFAULT_FACE_MARGIN, "align": False, "min_face": DEFAULT_MIN_FACE}
#: One default engine everywhere: `auto` is torch until `mffmoe export` has calibrated a faster engine
#: that agrees with it to 1e-4 (see mffmoe.engine.auto), so a fresh install gets the spec's numbers.
DEFAULT_ENGINE = "auto"
DEFAULT_DEVICE = "auto"
EMA_DECAY = 0.995
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Pillow's hard decompression-bomb cap (2 x PIL.Image.MAX_IMAGE_PIXELS): the most pixels an image may
#: have, and the default limit. A lower `max_image_pixels` tightens it; nothing can raise it.
MAX_IMAGE_PIXELS = 2 * 89_478_485
MODEL_NAME = "MFF-MOE-V1"
APP_NAME = "mffmoe"

#: Where weights are looked for when neither --weights nor MFFMOE_WEIGHTS is given.
DEFAULT_WEIGHTS_DIR = Path("models/MFF-MoE-V1")


class Settings(BaseSettings):
    """The process environment, read once per call of `env()`: `MFFMOE_WEIGHTS`, `MFFMOE_CACHE_DIR`,
    `MFFMOE_API_KEY`, `MFFMOE_DB`, `MFFMOE_PROGRESS`, `MFFMOE_ALLOW_TRITON`, `MFFMOE_BUILD` (0: `auto` never
    prepares graphs on first use, see `engine.prepare`). `MFFMOE_HUGEPAGES=0` is the one read elsewhere: by
    the `mffmoe` command before anything is imported (`mffmoe/_entry.py`). Folders default to the
    platform's (platformdirs: `$XDG_CACHE_HOME/mffmoe`, `$XDG_STATE_HOME/mffmoe` on Linux)."""

    model_config = SettingsConfigDict(env_prefix="MFFMOE_", env_ignore_empty=True, extra="ignore")

    weights: Path | None = None
    cache_dir: Path | None = None
    api_key: str | None = None
    db: Path | None = None
    progress: bool = False
    allow_triton: bool = False
    build: bool = True

    @property
    def cache_root(self) -> Path:
        """Exports and calibration records when the weights' own folder is not writable."""
        return self.cache_dir or user_cache_path(APP_NAME)

    @property
    def db_path(self) -> Path:
        """The server's SQLite job store (jobs outlive the working directory)."""
        return self.db or user_state_path(APP_NAME) / "jobs.sqlite3"


def config_error(error: ValidationError, what: str) -> ConfigError:
    """A pydantic validation failure as one readable line, typed as the user mistake it is."""
    parts = []
    for e in error.errors():
        where = ".".join(str(x) for x in e["loc"])
        message = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return ConfigError(f"{what}: " + "; ".join(parts))


def env() -> Settings:
    """The environment as it is now (cheap; not cached, so a changed variable is seen)."""
    return Settings()


def resolve_weights_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`explicit` > $MFFMOE_WEIGHTS > ./models/MFF-MoE-V1 (existence is checked by the loader)."""
    if explicit:
        return Path(explicit)
    return env().weights or DEFAULT_WEIGHTS_DIR


class DetectorConfig(BaseModel):
    """Which detector, with which options: everything `Detector.from_config` needs."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), frozen=True)

    weights: Path | None = Field(None, description="weights dir or .safetensors file (None: $MFFMOE_WEIGHTS, "
                                                   "then ./models/MFF-MoE-V1)")
    untrained: bool = Field(False, description="random weights, to try the pipeline; every result says so")
    roster: tuple[str, ...] = Field(DEFAULT_ROSTER, description="untrained only: the random model's experts")
    input_size: int = Field(DEFAULT_INPUT_SIZE, ge=8, description="untrained only: its input size")
    seed: int = Field(0, description="untrained only: the random weights' seed")
    allow_missing_ema: bool = False
    device: str = DEFAULT_DEVICE
    engine: str = DEFAULT_ENGINE
    engine_options: dict[str, Any] = Field(default_factory=dict, description="passed to the engine, e.g. "
                                           "{'lean': True} for the torch engine")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1)
    threshold: float = Field(DEFAULT_THRESHOLD, ge=0.0, le=1.0, description="FAKE iff score >= threshold")
    frames: int = Field(DEFAULT_FRAMES, ge=1, description="frames sampled per video")
    pooling: str = Field(DEFAULT_POOLING, description="video pooling (checked against the registry in "
                         "mffmoe.pooling when the detector is built)")
    max_image_pixels: int | None = Field(None, ge=1, le=MAX_IMAGE_PIXELS, description="largest image (width x "
                                         "height) decoded; None: Pillow's hard cap, MAX_IMAGE_PIXELS")
    early_exit: bool = False
    precision: Literal["fp32", "bf16", "int8"] = Field(
        "fp32", description="CPU precision (OpenVINO engine): fp32, exact and the default; bf16 or int8, opt-in, "
        "faster, with their measured difference from fp32 reported (engine.precision); refused where the CPU "
        "lacks them")
    model_name: str = MODEL_NAME
    crop: Literal["frame", "faces", "auto"] | None = Field(
        None, description="frame: the spec's whole-frame input; faces: score face crops (the whole frame, "
        "flagged out of scope, when none is found); auto: the same; None: what the weights were trained on "
        "(their manifest's crop; the official weights: auto)")
    face_margin: float | None = Field(None, ge=1.0, le=3.0, description="crop side / face box side (None: "
                                      "the weights' trained margin, else 1.3)")
    align: bool | None = Field(None, description="rotate each face upright by its eyes before cropping (None: "
                               "as the weights were trained, else off)")
    face_pooling: Literal["max", "mean", "largest"] = Field("max", description="an image's score from its faces")
    min_face: int | None = Field(None, ge=8, description="smallest face looked for (pixels, box side; None: the "
                                 "weights' trained value, else 32)")
    max_faces: int = Field(DEFAULT_MAX_FACES, ge=1, le=64, description="most faces kept per image or frame")
    face_detector: str = Field(DEFAULT_FACE_DETECTOR, description="face detector (mffmoe.faces registry)")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise config_error(e, "detector configuration") from None

    @field_validator("pooling")
    @classmethod
    def _known_pooling(cls, value: str) -> str:
        from mffmoe.pooling import POOLINGS  # a leaf module (numpy only), imported when a config is made

        if value not in POOLINGS:
            raise ValueError(f"unknown pooling {value!r}; choose from {sorted(POOLINGS)}")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
            raise ValueError(f"unknown device {value!r}; choose from auto, cpu, cuda")
        return value

    def with_trained(self, trained: Mapping[str, Any]) -> DetectorConfig:
        """This configuration with what it leaves open (None: the crop mode and face settings) taken from
        `trained`, what the weights were trained with (`model.checkpoint.trained_settings`), else the
        defaults (crop `auto`: the official weights were trained on faces)."""
        defaults = {"crop": "auto", **FACE_DEFAULTS}
        update = {k: trained.get(k, d) for k, d in defaults.items() if getattr(self, k) is None}
        return DetectorConfig(**{**self.model_dump(), **update}) if update else self

    @property
    def resolved(self) -> bool:
        """Whether the crop mode and face settings are all explicit (see `with_trained`)."""
        return all(getattr(self, k) is not None for k in ("crop", *FACE_DEFAULTS))


#: DetectorConfig's field names, for settings models that accept them flat (`ScanOptions(frames=8)`).
DETECTOR_FIELDS = frozenset(DetectorConfig.model_fields)


def nest_detector_fields(data: Any) -> Any:
    """A `mode="before"` validator body: move flat DetectorConfig keys into `detector`."""
    if not isinstance(data, dict):
        return data
    flat = {k: data[k] for k in list(data) if k in DETECTOR_FIELDS}
    if not flat:
        return data
    rest = {k: v for k, v in data.items() if k not in flat}
    nested = rest.get("detector")
    if isinstance(nested, DetectorConfig):
        nested = nested.model_dump(exclude_unset=True)
    rest["detector"] = {**(nested or {}), **flat}
    return rest


class MFFMoEV1Config(BaseModel):
    """The host's detector configuration, accepted as written in the spec's integration example.
    Unknown keys are ignored with a warning that names them (a misspelt key must not pass silently)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    class_name: str = "MFFMoEDetectorV1"
    model_name: str = MODEL_NAME
    model_path: str = str(DEFAULT_WEIGHTS_DIR) + "/"
    isImage: bool = True
    isVideo: bool = True
    isAudio: bool = False
    video_frames_to_sample: int = Field(DEFAULT_FRAMES, ge=1)
    # Our additions; defaults keep the host's behaviour.
    device: str = DEFAULT_DEVICE
    engine: str = DEFAULT_ENGINE
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1)
    threshold: float = Field(DEFAULT_THRESHOLD, ge=0.0, le=1.0)
    pooling: str = DEFAULT_POOLING
    allow_missing_ema: bool = False
    untrained: bool = False
    max_image_pixels: int | None = None
    crop: Literal["frame", "faces", "auto"] = "frame"  # the host stored whole-frame scores

    def __init__(self, **data: Any) -> None:
        unknown = sorted(set(data) - set(type(self).model_fields))
        if unknown:
            warnings.warn(f"MFFMoEV1Config: unknown key(s) {unknown} ignored; known keys: "
                          f"{sorted(type(self).model_fields)}", UserWarning, stacklevel=2)
        super().__init__(**data)

    def detector_config(self) -> DetectorConfig:
        """The same settings as a DetectorConfig (what `MFFMoEDetectorV1.load` builds from)."""
        return DetectorConfig(weights=None if self.untrained else Path(self.model_path), untrained=self.untrained,
                              allow_missing_ema=self.allow_missing_ema, device=self.device, engine=self.engine,
                              batch_size=self.batch_size, threshold=self.threshold,
                              frames=self.video_frames_to_sample, pooling=self.pooling,
                              max_image_pixels=self.max_image_pixels, model_name=self.model_name, crop=self.crop)
