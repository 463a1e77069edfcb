"""One check's outcome (`Check`), kept apart from `verify.py` (which needs torch) so that the server can
report checks run in a child process without importing torch itself."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Status = Literal["pass", "fail", "unknown", "skipped"]
Group = Literal["hash", "structure", "golden"]


class Check(BaseModel):
    """One check's outcome. `name` says what was checked (`sha256 MFF-MoE-v1.pth`, `finite`, `golden
    img_1_should_be_0.0016829653177410.jpg`); `detail` why it passed or failed, in words."""

    name: str
    group: Group
    status: Status
    detail: str
