"""Service settings as data, shared by the CLI (`mffmoe serve`) and the app factory.

`ServerSettings` is read from keyword arguments, then from the environment: `MFFMOE_<FIELD>` for its
own fields (`MFFMOE_API_KEY`, `MFFMOE_QUEUE_SIZE`, ...) and `MFFMOE_DETECTOR__<FIELD>` for the detector's
(`MFFMOE_DETECTOR__ENGINE=openvino`). The job database defaults to `$MFFMOE_DB`, then the platform's
state folder; the weights to `$MFFMOE_WEIGHTS` (applied by the loader, not here). No other variable is
read: there is deliberately no top-level field named like another `MFFMOE_*` variable.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mffmoe.config import DetectorConfig, config_error, env, nest_detector_fields
from mffmoe.errors import ConfigError
from mffmoe.server.uploads import UploadLimits


class ServerSettings(BaseSettings):
    """Everything the app needs: the detector it loads (when not given one), limits, storage, auth.
    Flat detector keys are accepted too (`ServerSettings(frames=8)`). Bad values raise ConfigError."""

    model_config = SettingsConfigDict(env_prefix="MFFMOE_", env_nested_delimiter="__", env_ignore_empty=True,
                                      extra="forbid", protected_namespaces=())

    detector: DetectorConfig = Field(default_factory=lambda: DetectorConfig(crop="frame"),
                                     description="used when the app loads the detector itself; its `frames` "
                                                 "is the default per video. Its crop defaults to frame: the "
                                                 "host's clients get the whole-frame numbers they stored")
    # Limits.
    max_upload_mb: float = Field(500.0, gt=0)
    max_frames: int = Field(1000, ge=1, description="upper bound on the `frames` form field")
    queue_size: int = Field(8, ge=0, description="jobs waiting for a worker (running ones not counted)")
    workers: int = Field(1, ge=1, description="inference threads; forwards are serialised by the engine")
    # Uploads: they hold no queue slot while they arrive, so these bound what slow or hostile clients cost.
    max_uploads: int = Field(16, ge=1, description="uploads received at once; more get 503 + Retry-After")
    max_form_fields: int = Field(16, ge=0, description="text fields per form (each name once); more get 400")
    max_field_kb: float = Field(4.0, gt=0, description="size of one text field; larger gets 400")
    upload_timeout_s: float = Field(900.0, gt=0, description="whole body within this, or 408")
    upload_idle_timeout_s: float = Field(30.0, gt=0, description="longest wait for the next bytes, or 408")
    upload_min_kbps: float = Field(16.0, ge=0, description="average KB/s after the grace period, or 408 "
                                                            "(0: no minimum)")
    upload_grace_s: float = Field(10.0, ge=0, description="seconds before the minimum rate applies")
    upload_drain_mb: float = Field(8.0, ge=0, description="rest of a refused body read and discarded so the "
                                                          "client gets the answer; longer is cut")
    # Storage.
    db_path: Path = Field(default_factory=lambda: env().db_path, description="SQLite job store")
    upload_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()))
    job_ttl_hours: float = Field(168.0, gt=0, description="finished jobs older than this are purged")
    # Auth: None means open.
    api_key: str | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise config_error(e, "server settings") from None

    @model_validator(mode="before")
    @classmethod
    def _nest_detector(cls, data: Any) -> Any:
        data = nest_detector_fields(data)
        if isinstance(data, dict):  # the host's endpoint: frame unless configured
            nested = data.get("detector")
            if isinstance(nested, dict):
                nested.setdefault("crop", "frame")
            elif isinstance(nested, DetectorConfig) and "crop" not in nested.model_fields_set:
                data["detector"] = nested.model_copy(update={"crop": "frame"})  # e.g. built by `mffmoe serve`
        return data

    @model_validator(mode="after")
    def _frames_within_limit(self) -> ServerSettings:
        self.check()
        return self

    def check(self) -> None:
        """Cross-field rules (run at construction; `create_app` runs them again, since fields are
        assignable)."""
        if self.detector.frames > self.max_frames:
            raise ConfigError(f"frames {self.detector.frames} is above max_frames {self.max_frames}: "
                              "the default per video must be a value a request may ask for")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def upload_limits(self) -> UploadLimits:
        return UploadLimits(max_file_bytes=self.max_upload_bytes, max_fields=self.max_form_fields,
                            max_field_bytes=int(self.max_field_kb * 1024),
                            drain_bytes=int(self.upload_drain_mb * 2**20), timeout_s=self.upload_timeout_s,
                            idle_timeout_s=self.upload_idle_timeout_s, min_rate=self.upload_min_kbps * 1024,
                            grace_s=self.upload_grace_s)
