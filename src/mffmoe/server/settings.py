"""Service settings as data, shared by the CLI (`mffmoe serve`) and the app factory."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

API_KEY_ENV = "MFFMOE_API_KEY"
DB_ENV = "MFFMOE_DB"


def default_db_path() -> Path:
    """$MFFMOE_DB, else the XDG state directory (jobs outlive the working directory)."""
    env = os.environ.get(DB_ENV)
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "mffmoe" / "jobs.sqlite3"


class ServerSettings(BaseModel):
    """Everything the app needs besides the detector. Defaults match `mffmoe serve`."""

    model_config = ConfigDict(protected_namespaces=())

    # Model (used only when the app loads the detector itself).
    weights: Optional[Path] = None
    device: str = "auto"
    engine: str = "torch"
    batch_size: int = Field(16, ge=1)
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    frames: int = Field(100, ge=1, description="frames sampled per video unless the request says otherwise")
    untrained: bool = False
    allow_missing_ema: bool = False
    # Limits.
    max_upload_mb: float = Field(500.0, gt=0)
    max_frames: int = Field(1000, ge=1, description="upper bound on the `frames` form field")
    queue_size: int = Field(8, ge=0, description="jobs waiting for a worker (running ones not counted)")
    workers: int = Field(1, ge=1, description="inference threads; forwards are serialised by the engine")
    # Storage.
    db_path: Path = Field(default_factory=default_db_path)
    upload_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()))
    job_ttl_hours: float = Field(168.0, gt=0, description="finished jobs older than this are purged")
    # Auth: None means open. Read from $MFFMOE_API_KEY by default.
    api_key: Optional[str] = Field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
